package spore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spore.dev/spore"
)

// The test binary, run again with this variable set, is a worker process
// that attaches to the listener at its value.
const workerEnv = "SPORE_GO_TEST_ATTACH_WORKER"

func init() {
	if sock := os.Getenv(workerEnv); sock != "" {
		os.Exit(attachWorker(sock))
	}
}

func attachWorker(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := spore.Attach(ctx, sock, spore.WithoutLogs())
	if err != nil {
		fmt.Fprintln(os.Stderr, "attach:", err)
		return 10
	}
	defer r.Close()
	web, err := r.Find(ctx, "web")
	if err != nil {
		fmt.Fprintln(os.Stderr, "find:", err)
		return 11
	}
	if _, err := web.Call(ctx, "sys.ping", nil); err != nil {
		fmt.Fprintln(os.Stderr, "ping:", err)
		return 12
	}
	mine, err := r.Local(ctx, spore.Options{"name": "go-worker-local"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "local:", err)
		return 13
	}
	fmt.Println(web.ID(), mine.ID())
	return 0
}

func TestSharedRouterWithWorkerProcesses(t *testing.T) {
	ctx := bg(t)
	dir, err := os.MkdirTemp("", "spore-go-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "run", "router.sock")
	listener := newRouter(t, spore.WithoutLogs())
	web := must(listener.Local(ctx, spore.Options{"name": "web"}))
	if err := listener.Listen(sock); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", st, err)
	}
	var seen [][2]uint32
	for i := 0; i < 2; i++ {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), workerEnv+"="+sock)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		var w, l uint32
		if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &w, &l); err != nil {
			t.Fatalf("worker output %q: %v", out, err)
		}
		seen = append(seen, [2]uint32{w, l})
	}
	if seen[0][0] != web.ID() || seen[1][0] != web.ID() || seen[0][1] != seen[1][1] {
		t.Fatalf("workers saw %v; web is %d", seen, web.ID())
	}
	if c, err := listener.Find(ctx, "go-worker-local"); err != nil || c.ID() != seen[0][1] {
		t.Fatalf("listener's find: %v %v", c, err)
	}

	a, err := spore.Attach(ctx, sock, spore.WithoutLogs())
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if _, err := must(a.Find(ctx, "web")).Call(ctx, "sys.ping", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Find(ctx, "nobody"); !errors.Is(err, spore.ErrNotFound) {
		t.Fatalf("find nobody: %v", err)
	}
	fresh := must(a.Local(ctx, spore.Options{"name": "go-worker-local", "reuse": false}))
	if fresh.ID() == seen[0][1] {
		t.Fatal("reuse=false gave the shared context")
	}
	a.Close()
	if _, err := web.Call(ctx, "sys.ping", nil); err != nil {
		t.Fatalf("the listener's context after the attached router closed: %v", err)
	}
	if _, err := spore.Attach(ctx, filepath.Join(dir, "none.sock")); !errors.Is(err, spore.ErrConnect) {
		t.Fatalf("attach to nothing: %v", err)
	}
	if err := listener.Listen(sock); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("second Listen: %v", err)
	}
	listener.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
}
