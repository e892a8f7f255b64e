package main

import (
	"os/exec"
	"testing"
)

// TestFunctionReferencing: the function of Debian's stripped memcached
// that names the commands cache_memlimit and lru_crawler is found, and is
// one of its unwind table's function starts.
func TestFunctionReferencing(t *testing.T) {
	path, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("memcached not installed")
	}
	a, err := functionReferencing(path, "cache_memlimit", "lru_crawler")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%#x", a)
	if _, err := functionReferencing(path, "cache_memlimit", "no such string here"); err == nil {
		t.Error("a string the binary lacks: no error")
	}
}
