package discover

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// The workload runs in a process of its own, the runner, started before
// any supervisor: a supervisor's tracer waits for any child of the
// process it runs in (wait4(-1): that is how it sees new tracees), so a
// workload started from here would be reaped by it and its exit status
// lost.

// RunnerArg is the hidden first argument with which the assure binary
// runs as the workload runner (RunnerMain).
const RunnerArg = "__assure_workload"

type runRequest struct {
	Cmd       string `json:"cmd"`
	TimeoutMs int64  `json:"timeoutMs"`
}

type runReply struct {
	Err string `json:"err,omitempty"` // "" when the command exited 0
}

// runner is the parent's end of the runner process.
type runner struct {
	mu  sync.Mutex
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startRunner(self string) (*runner, error) {
	cmd := exec.Command(self, RunnerArg)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the workload runner: %w", err)
	}
	return &runner{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

// run runs sh -c cmdline in the runner, for at most timeout; nil when it
// exited 0.
func (r *runner) run(cmdline string, timeout time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	req, _ := json.Marshal(runRequest{Cmd: cmdline, TimeoutMs: timeout.Milliseconds()})
	if _, err := r.in.Write(append(req, '\n')); err != nil {
		return fmt.Errorf("workload runner: %w", err)
	}
	line, err := r.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("workload runner: %w", err)
	}
	var rep runReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return fmt.Errorf("workload runner: %w", err)
	}
	if rep.Err != "" {
		return errors.New(rep.Err)
	}
	return nil
}

// close ends the runner (the supervisor may already have reaped it).
func (r *runner) close() {
	r.in.Close()
	done := make(chan struct{})
	go func() { r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
	}
}

// RunnerMain serves run requests on stdin until it closes.
func RunnerMain() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req runRequest
		rep := runReply{}
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			rep.Err = err.Error()
		} else if err := runOnce(req); err != nil {
			rep.Err = err.Error()
		}
		enc.Encode(rep)
	}
}

func runOnce(req runRequest) error {
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", req.Cmd)
	// In a process group of its own, killed whole at the timeout: a
	// client the shell started must not outlive it (a load generator
	// spinning on a refused connection).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what the workload left running
	}
	if ctx.Err() != nil {
		return fmt.Errorf("workload timed out after %v", timeout)
	}
	if err != nil {
		msg := bytes.TrimSpace(out.Bytes())
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		return fmt.Errorf("workload: %v: %s", err, msg)
	}
	return nil
}
