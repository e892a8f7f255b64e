package recovery_test

import "testing"

// TestE2ECheckpointDoesNotInterruptEpoll: every checkpoint stops all
// threads; a thread asleep in epoll_wait would see EINTR for it (as after
// SIGSTOP/SIGCONT) unless assure restarts the wait. It must not see any,
// and must still wake up when data arrives.
func TestE2ECheckpointDoesNotInterruptEpoll(t *testing.T) {
	want := map[string]string{"calls": "200", "sum": "100", "eintr": "0", "woken": "1"}
	t.Run("native", func(t *testing.T) {
		r := runNative(t, "epollwait", "200")
		wantStatus(t, r, 0)
		wantKV(t, r, want)
	})
	t.Run("assure", func(t *testing.T) {
		r := runAssure(t, simpleManifest("epollwait", -1, "handle_request"), "epollwait", "200")
		wantStatus(t, r, 0)
		wantKV(t, r, want)
	})
}
