package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// memcachedConns is the number of client connections, as redis-benchmark's
// 20 clients.
const memcachedConns = 20

// memcachedBench is Debian's memcached (stripped, so the rescue point is
// given by address) with threads worker threads: natively and with a
// rescue point on process_command_ascii, its per-request function.
func memcachedBench(threads int) func() (*serverBench, error) {
	return func() (*serverBench, error) {
		server, err := realPath("memcached")
		if err != nil {
			return nil, err
		}
		addr, err := functionReferencing(server, "cache_memlimit", "lru_crawler")
		if err != nil {
			return nil, fmt.Errorf("memcached: find process_command_ascii: %w", err)
		}
		hex := fmt.Sprintf("%#x", addr)
		return &serverBench{
			name:      fmt.Sprintf("memcached -t %d", threads),
			workloads: []string{"set, 20 connections", "get, 20 connections"},
			modes: []serverMode{{name: "native"},
				{name: "rescue point on process_command_ascii", rp: map[string]any{"binary": server, "address": hex}}},
			note: fmt.Sprintf("Debian's memcached (`%s`, stripped: the rescue point is `\"address\": \"%s\"`, the function that refers to the command names `cache_memlimit` and `lru_crawler`), `-t %d` worker threads, over the loopback; a Go client with 20 connections, each sending its share of %%d requests one at a time (8-byte values, 1000 keys).", server, hex, threads),
			start: func(dir string) ([]string, string, error) {
				port, err := freePort()
				if err != nil {
					return nil, "", err
				}
				return []string{server, "-u", "root", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-t", strconv.Itoa(threads)},
					fmt.Sprintf("tcp:127.0.0.1:%d", port), nil
			},
			measure: func(ctx context.Context, addr string, requests int) ([]float64, error) {
				var out []float64
				for _, op := range []string{"set", "get"} {
					v, err := memcachedLoad(ctx, strings.TrimPrefix(addr, "tcp:"), op, requests)
					if err != nil {
						return nil, fmt.Errorf("memcached %s: %w", op, err)
					}
					out = append(out, v)
				}
				return out, nil
			},
		}, nil
	}
}

// memcachedLoad sends requests ASCII-protocol commands over
// memcachedConns connections, each waiting for its reply before the next,
// and returns the rate. Every reply is checked.
func memcachedLoad(ctx context.Context, addr, op string, requests int) (float64, error) {
	per := requests / memcachedConns
	var wg sync.WaitGroup
	errs := make(chan error, memcachedConns)
	start := time.Now()
	for c := 0; c < memcachedConns; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			if err := memcachedConn(ctx, addr, op, c, per); err != nil {
				errs <- err
			}
		}(c)
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(per*memcachedConns) / took.Seconds(), nil
}

func memcachedConn(ctx context.Context, addr, op string, c, n int) error {
	conn, r, err := dialLoad(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("key:%d", (c*n+i)%1000)
		var req string
		if op == "set" {
			req = "set " + key + " 0 0 8\r\n12345678\r\n"
		} else {
			req = "get " + key + "\r\n"
		}
		if _, err := conn.Write([]byte(req)); err != nil {
			return err
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if op == "set" {
				if line != "STORED\r\n" {
					return fmt.Errorf("set %s: reply %q", key, line)
				}
				break
			}
			if line == "END\r\n" {
				break
			}
			if !strings.HasPrefix(line, "VALUE ") && line != "12345678\r\n" {
				return fmt.Errorf("get %s: reply %q", key, line)
			}
		}
	}
	return nil
}

// dialLoad opens a load generator's TCP connection to addr, with ctx's
// deadline on it.
func dialLoad(ctx context.Context, addr string) (net.Conn, *bufio.Reader, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return conn, bufio.NewReader(conn), nil
}

// functionReferencing returns the ELF address of the one function of path
// whose code refers (RIP-relative) to every string of strs: how a stripped
// binary's function is found from what it does. The functions are those of
// elfsym (the unwind table of a stripped file); x86asm decodes them.
func functionReferencing(path string, strs ...string) (uint64, error) {
	ef, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer ef.Close()
	want := map[uint64]int{}
	for i, s := range strs {
		as, err := stringAddrs(ef, s)
		if err != nil {
			return 0, err
		}
		for _, a := range as {
			want[a] = i
		}
	}
	text := ef.Section(".text")
	if text == nil {
		return 0, errors.New("no .text")
	}
	code, err := text.Data()
	if err != nil {
		return 0, err
	}
	f, err := elfsym.Open(path)
	if err != nil {
		return 0, err
	}
	var found []uint64
	for _, fn := range f.Funcs() {
		if fn.Addr < text.Addr || fn.Addr+fn.Size > text.Addr+uint64(len(code)) {
			continue
		}
		seen := map[int]bool{}
		body := code[fn.Addr-text.Addr : fn.Addr-text.Addr+fn.Size]
		for off := 0; off < len(body); {
			inst, err := x86asm.Decode(body[off:], 64)
			if err != nil {
				off++
				continue
			}
			for _, a := range inst.Args {
				if m, ok := a.(x86asm.Mem); ok && m.Base == x86asm.RIP {
					target := fn.Addr + uint64(off+inst.Len) + uint64(m.Disp)
					if i, ok := want[target]; ok {
						seen[i] = true
					}
				}
			}
			off += inst.Len
		}
		if len(seen) == len(strs) {
			found = append(found, fn.Addr)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%d functions of %s refer to %q, want 1", len(found), path, strs)
	}
	return found[0], nil
}

// stringAddrs are the addresses of the string s, NUL-terminated, in
// .rodata (the linker may have merged it into the tail of a longer one).
func stringAddrs(ef *elf.File, s string) ([]uint64, error) {
	ro := ef.Section(".rodata")
	if ro == nil {
		return nil, errors.New("no .rodata")
	}
	data, err := ro.Data()
	if err != nil {
		return nil, err
	}
	var out []uint64
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte(s+"\x00"))
		if i < 0 {
			break
		}
		out = append(out, ro.Addr+uint64(off+i))
		off += i + 1
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no string %q in .rodata", s)
	}
	return out, nil
}
