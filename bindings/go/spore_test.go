// The Go binding's test suite (ctest runs it as go.test, with
// SPORE_AGENT_PATH pointing at the build's agent).
package spore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"spore.dev/spore"
	"spore.dev/spore/internal/capi"
)

// descendants lists the live processes (zombies too) below this one.
func descendants() []int {
	parents := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 {
			parents[pid], _ = strconv.Atoi(f[1])
		}
	}
	me := os.Getpid()
	var out []int
	for pid := range parents {
		p := pid
		for depth := 0; depth < 64; depth++ {
			pp, ok := parents[p]
			if !ok {
				break
			}
			if pp == me {
				out = append(out, pid)
				break
			}
			p = pp
		}
	}
	return out
}

func requireNoDescendants(t *testing.T) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for len(descendants()) > 0 && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
	}
	if d := descendants(); len(d) > 0 {
		t.Fatalf("processes left behind: %v", d)
	}
}

var openRouters atomic.Int32

func newRouter(t *testing.T, opts ...spore.RouterOption) *spore.Router {
	t.Helper()
	r, err := spore.NewRouter(opts...)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	openRouters.Add(1)
	t.Cleanup(func() {
		r.Close()
		// Once the last router of the test is closed, none of its
		// processes may be left.
		if openRouters.Add(-1) == 0 {
			requireNoDescendants(t)
		}
	})
	return r
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// must returns v, or fails the test by panicking (only on the test's own
// goroutine) when err is not nil.
// errWithin is what errc gives, failing the test with stuck when nothing
// comes within d.
func errWithin(t *testing.T, errc <-chan error, d time.Duration, stuck string) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		t.Fatal(stuck)
		return nil
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func codeOf(err error) spore.Code {
	var e *spore.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestVersion(t *testing.T) {
	if v := spore.Version(); strings.Count(v, ".") != 2 {
		t.Fatalf("version %q", v)
	}
}

func TestLocalContextAndResultTypes(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, spore.Options{"name": "go"}))
	if c.Name() != "go" || c.ID() == 0 || !c.Alive() || c.Router() != r {
		t.Fatalf("context %v id %d alive %v", c.Name(), c.ID(), c.Alive())
	}
	if ok := must(spore.CallAs[bool](ctx, c, "sys.ping", nil)); !ok {
		t.Fatal("sys.ping did not return true")
	}
	info := must(spore.CallAs[map[string]any](ctx, c, "sys.info", nil))
	if info["context"] != "go" || info["pid"].(float64) == float64(os.Getpid()) {
		t.Fatalf("sys.info: %v", info)
	}
	res := must(c.Call(ctx, "sys.echo", spore.Args{"value": []any{int64(1) << 53, "two", map[string]any{"three": 3.5}, nil}}))
	v := must(res.Value())
	list := v.([]any)
	if n, _ := list[0].(interface{ Int64() (int64, error) }).Int64(); n != 1<<53 {
		t.Fatalf("integer came back as %v", list[0])
	}
	if list[1] != "two" || list[3] != nil {
		t.Fatalf("echo: %v", list)
	}
	if f, _ := list[2].(map[string]any)["three"].(interface{ Float64() (float64, error) }).Float64(); f != 3.5 {
		t.Fatalf("float: %v", list[2])
	}
	if s := must(spore.CallAs[string](ctx, c, "sys.echo", spore.Args{"value": "naïve ☃"})); s != "naïve ☃" {
		t.Fatalf("unicode: %q", s)
	}
	type stat struct {
		Type string `json:"type"`
	}
	if st := must(spore.CallAs[stat](ctx, c, "fs.stat", struct {
		Path string `json:"path"`
	}{"/etc"})); st.Type != "dir" {
		t.Fatalf("fs.stat: %+v", st)
	}
	if res.Data != nil {
		t.Fatal("a result without a binary part has Data")
	}
}

// Python functions the target has, by name (py:), and their errors.
func TestPythonFunctionsByName(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, spore.Options{"python_path": "/usr/bin/env python3"}))
	if s := must(spore.CallAs[string](ctx, c, "py:posixpath:join", spore.Args{"args": []any{"a", "b"}})); s != "a/b" {
		t.Fatalf("posixpath.join: %q", s)
	}
	_, err := c.Call(ctx, "py:json:loads", spore.Args{"args": []any{"{not json"}})
	var e *spore.Error
	if !errors.As(err, &e) || e.Code != spore.ErrRemote || e.RemoteType != "json.decoder.JSONDecodeError" ||
		!strings.Contains(e.Traceback, "Traceback") {
		t.Fatalf("json.loads of bad JSON: %v", err)
	}
	if _, err := c.Call(ctx, "py:json:no_such_function", nil); !errors.Is(err, spore.ErrNoFunc) {
		t.Fatalf("a missing function: %v", err)
	}
}

func TestBinaryData(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))
	blob := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18)
	blob = append(blob, []byte("\x00tail")...)
	res := must(c.Call(ctx, "sys.echo", spore.Args{"value": 1}, spore.WithData(blob)))
	if !bytes.Equal(res.Data, blob) || string(res.JSON) != "1" {
		t.Fatalf("echo of %d bytes came back as %d bytes, value %s", len(blob), len(res.Data), res.JSON)
	}
	path := must(spore.CallAs[string](ctx, c, "fs.mktemp", nil))
	defer c.Call(ctx, "fs.remove", spore.Args{"path": path})
	must(c.Call(ctx, "fs.write", spore.Args{"path": path}, spore.WithData([]byte("\x00\x01\xffbinary"))))
	got := must(c.Call(ctx, "fs.read", spore.Args{"path": path}))
	if string(got.Data) != "\x00\x01\xffbinary" {
		t.Fatalf("fs.read: %q", got.Data)
	}
}

func TestForkThroughAContext(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))
	child := must(r.Fork(ctx, c, nil))
	if !strings.HasPrefix(child.Name(), c.Name()+"/") {
		t.Fatalf("child name %q", child.Name())
	}
	ci := must(spore.CallAs[map[string]any](ctx, child, "sys.info", nil))
	pi := must(spore.CallAs[map[string]any](ctx, c, "sys.info", nil))
	if ci["ppid"] != pi["pid"] {
		t.Fatalf("fork's parent %v, via's pid %v", ci["ppid"], pi["pid"])
	}
}

func TestErrorCodesMatchTheCLibrary(t *testing.T) {
	codes := spore.Codes()
	if len(codes) != -int(capi.SPORE__ERROR_LAST) {
		t.Fatalf("%d Go codes, the C library has %d", len(codes), -int(capi.SPORE__ERROR_LAST))
	}
	for _, c := range codes {
		if c >= 0 || strings.HasPrefix(c.Name(), "E-") || c.Error() == "spore: unknown error" && c != spore.ErrUnknown {
			t.Fatalf("code %d (%s): %q", int(c), c.Name(), c.Error())
		}
		var err error = c
		if !errors.Is(&spore.Error{Code: c}, err) {
			t.Fatalf("errors.Is does not match %s", c.Name())
		}
	}
	pairs := map[spore.Code]capi.Enum_SS_spore_error_code{
		spore.ErrInvalid: capi.SPORE_EINVAL, spore.ErrNoMem: capi.SPORE_ENOMEM, spore.ErrConnect: capi.SPORE_ECONNECT,
		spore.ErrTimedOut: capi.SPORE_ETIMEDOUT, spore.ErrDisconnected: capi.SPORE_EDISCONNECTED,
		spore.ErrNoFunc: capi.SPORE_ENOFUNC, spore.ErrBadArgs: capi.SPORE_EBADARGS, spore.ErrRemote: capi.SPORE_EREMOTE,
		spore.ErrRefused: capi.SPORE_EREFUSED, spore.ErrTooBig: capi.SPORE_ETOOBIG, spore.ErrProto: capi.SPORE_EPROTO,
		spore.ErrNoRoute: capi.SPORE_ENOROUTE, spore.ErrShutdown: capi.SPORE_ESHUTDOWN,
		spore.ErrInternal: capi.SPORE_EINTERNAL, spore.ErrUnknown: capi.SPORE_EUNKNOWN, spore.ErrAuth: capi.SPORE_EAUTH,
		spore.ErrPasswordRequired: capi.SPORE_EPASSREQ, spore.ErrHostKey: capi.SPORE_EHOSTKEY,
		spore.ErrDenied: capi.SPORE_EDENIED, spore.ErrNotFound: capi.SPORE_ENOENT,
		spore.ErrPermission: capi.SPORE_EACCES, spore.ErrNoSpace: capi.SPORE_ENOSPC, spore.ErrChanged: capi.SPORE_ECHANGED,
		spore.ErrUnresponsive: capi.SPORE_EUNRESPONSIVE, spore.ErrNoPython: capi.SPORE_ENOPYTHON,
		spore.ErrWorkerDied: capi.SPORE_EWORKER,
	}
	if len(pairs) != len(codes) {
		t.Fatalf("the table names %d codes of %d", len(pairs), len(codes))
	}
	for g, c := range pairs {
		if int(g) != int(c) {
			t.Fatalf("%s is %d in Go and %d in C", g.Name(), int(g), int(c))
		}
	}
}

func TestErrors(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))

	_, err := c.Call(ctx, "no.such.function", nil)
	var e *spore.Error
	if !errors.Is(err, spore.ErrNoFunc) || !errors.As(err, &e) {
		t.Fatalf("unknown function: %v", err)
	}
	if e.Context != c.Name() || e.Function != "no.such.function" || !strings.Contains(e.Error(), c.Name()) {
		t.Fatalf("detail: %+v", e)
	}

	_, err = c.Call(ctx, "fs.read", spore.Args{"path": "/nonexistent/spore"})
	if !errors.As(err, &e) || e.Code != spore.ErrRemote || e.RemoteType != "FileNotFoundError" ||
		!strings.Contains(e.Message, "nonexistent") {
		t.Fatalf("remote failure: %#v", err)
	}
	if _, err = c.Call(ctx, "fs.stat", nil); !errors.Is(err, spore.ErrBadArgs) {
		t.Fatalf("bad arguments: %v", err)
	}
	if _, err = c.Call(ctx, "sys.echo", []int{1}); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("arguments that are not an object: %v", err)
	}
	if _, err = c.Call(ctx, "sys.echo", spore.Args{"value": make(chan int)}); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("arguments that do not marshal: %v", err)
	}
	if _, err = r.Connect(ctx, "no-such-method", nil, nil); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("unknown method: %v", err)
	}
	if _, err = r.Local(ctx, spore.Options{"no_such_option": 1}); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("unknown option: %v", err)
	}
	if _, err = r.Local(ctx, spore.Options{"name": 1.5}); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("option of a type that is no option: %v", err)
	}
	if _, err = r.Local(ctx, spore.Options{"name": "a\x00b"}); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("NUL in an option: %v", err)
	}
	if _, err = r.Connect(ctx, "fork", nil, nil); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("fork without via: %v", err)
	}
	_, err = r.Local(ctx, spore.Options{"command_prefix": []string{"/nonexistent/launcher"}})
	if !errors.Is(err, spore.ErrConnect) {
		t.Fatalf("launcher missing: %v", err)
	}

	small := newRouter(t, spore.WithMaxMessageSize(64*1024))
	sc := must(small.Local(ctx, nil))
	if _, err = sc.Call(ctx, "sys.echo", nil, spore.WithData(make([]byte, 128*1024))); !errors.Is(err, spore.ErrTooBig) {
		t.Fatalf("oversized call: %v", err)
	}
}

func TestCallerContextDeadlineAndCancel(t *testing.T) {
	r := newRouter(t)
	c := must(r.Local(bg(t), nil))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := c.Call(ctx, "proc.run", spore.Args{"argv": []string{"sleep", "5"}})
	if !errors.Is(err, spore.ErrTimedOut) || !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 2*time.Second {
		t.Fatalf("deadline: %v after %v", err, time.Since(t0))
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	t0 = time.Now()
	_, err = c.Call(ctx, "proc.run", spore.Args{"argv": []string{"sleep", "5"}})
	if !errors.Is(err, context.Canceled) || time.Since(t0) > 2*time.Second {
		t.Fatalf("cancel: %v after %v", err, time.Since(t0))
	}

	// A connect that would take 10 s returns when its context is cancelled;
	// the process it started is stopped.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	t0 = time.Now()
	_, err = r.Local(ctx, spore.Options{"command_prefix": []string{"/bin/sh", "-c", "sleep 10", "sh"}})
	if !errors.Is(err, context.Canceled) || time.Since(t0) > 2*time.Second {
		t.Fatalf("connect cancel: %v after %v", err, time.Since(t0))
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = r.Local(ctx, spore.Options{"command_prefix": []string{"/bin/sh", "-c", "sleep 10", "sh"}})
	if !errors.Is(err, spore.ErrTimedOut) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connect deadline: %v", err)
	}
	if must(spore.CallAs[bool](bg(t), c, "sys.ping", nil)) != true {
		t.Fatal("the context is unusable after abandoned calls")
	}
}

func TestDisconnected(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))
	info := must(spore.CallAs[map[string]any](ctx, c, "sys.info", nil))
	p := must(c.CallAsync("proc.run", spore.Args{"argv": []string{"sleep", "30"}}))
	time.Sleep(200 * time.Millisecond)
	syscall.Kill(int(info["pid"].(float64)), syscall.SIGKILL)
	if _, err := p.Wait(ctx); !errors.Is(err, spore.ErrDisconnected) {
		t.Fatalf("call to a killed agent: %v", err)
	}
	if c.Alive() {
		t.Fatal("a killed context is alive")
	}
	if _, err := c.Call(ctx, "sys.ping", nil); !errors.Is(err, spore.ErrDisconnected) {
		t.Fatalf("call after the agent died: %v", err)
	}
}

func TestAsyncCalls(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))
	var ps []*spore.Pending
	for i := 0; i < 200; i++ {
		ps = append(ps, must(c.CallAsync("sys.echo", spore.Args{"value": i})))
	}
	for i, p := range ps {
		var n int
		res := must(p.Wait(ctx))
		if err := res.Decode(&n); err != nil || n != i {
			t.Fatalf("call %d returned %s", i, res.JSON)
		}
		if again := must(p.Wait(ctx)); string(again.JSON) != string(res.JSON) || !p.Done() {
			t.Fatal("a second Wait differs")
		}
		p.Close()
	}
	slow := must(c.CallAsync("proc.run", spore.Args{"argv": []string{"sleep", "0.3"}}))
	if slow.Done() {
		t.Fatal("a sleeping call is done")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := slow.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short wait: %v", err)
	}
	if rc := must(slow.Wait(ctx)); !strings.Contains(string(rc.JSON), `"rc":0`) {
		t.Fatalf("slow call: %s", rc.JSON)
	}
	failing := must(c.CallAsync("no.such.function", nil))
	if _, err := failing.Wait(ctx); !errors.Is(err, spore.ErrNoFunc) {
		t.Fatalf("async failure: %v", err)
	}
	// Close while another goroutine waits: the waiter returns at once.
	blocked := must(c.CallAsync("proc.run", spore.Args{"argv": []string{"sleep", "30"}}))
	errc := make(chan error, 1)
	go func() { _, err := blocked.Wait(context.Background()); errc <- err }()
	time.Sleep(100 * time.Millisecond)
	blocked.Close()
	if err := errWithin(t, errc, 3*time.Second, "a waiter was not released by Close"); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("waiter of a closed call: %v", err)
	}
	if err := c.CallNoReply("sys.ping", nil); err != nil {
		t.Fatal(err)
	}
}

func TestChain(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))
	dir := must(spore.CallAs[string](ctx, c, "fs.mktemp", spore.Args{"directory": true}))
	defer c.Call(ctx, "fs.remove", spore.Args{"path": dir, "recursive": true})
	ch := must(c.Chain())
	if err := ch.Step("fs.mkdir", spore.Args{"path": dir + "/a"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Step("fs.write", spore.Args{"path": dir + "/a/f", "text": "hello"}); err != nil {
		t.Fatal(err)
	}
	if got := must(ch.Call(ctx, "fs.read", spore.Args{"path": dir + "/a/f"})); string(got.Data) != "hello" {
		t.Fatalf("chain read %q", got.Data)
	}
	// After a failed step every later one fails with its error.
	ch.Step("fs.mkdir", spore.Args{"path": "/nonexistent/x/y"})
	if _, err := ch.Call(ctx, "sys.ping", nil); !errors.Is(err, spore.ErrRemote) {
		t.Fatalf("step after a failure: %v", err)
	}
	ch.Close()
	ch.Close()
	if err := ch.Step("sys.ping", nil); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("closed chain: %v", err)
	}
}

// recorder is a slog.Handler that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recorder) WithGroup(string) slog.Handler      { return h }

func (h *recorder) find(msg string) (slog.Record, map[string]string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		if r.Message != msg {
			continue
		}
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			if a.Value.Kind() == slog.KindGroup {
				for _, g := range a.Value.Group() {
					attrs[a.Key+"."+g.Key] = g.Value.String()
				}
			}
			return true
		})
		return r, attrs, true
	}
	return slog.Record{}, nil, false
}

func TestLogsArriveInSlog(t *testing.T) {
	h := &recorder{}
	r := newRouter(t, spore.WithLogger(slog.New(h)))
	ctx := bg(t)
	c := must(r.Local(ctx, spore.Options{"name": "logger-test"}))
	must(c.Call(ctx, "proc.run", spore.Args{"shell": "echo to-stdout; echo to-stderr >&2", "stream": true}))
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		_, _, a := h.find("to-stdout")
		_, _, b := h.find("to-stderr")
		if a && b {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rec, attrs, ok := h.find("to-stdout")
	if !ok || rec.Level != slog.LevelInfo || attrs["spore.context"] != "logger-test" || attrs["spore.logger"] != "stdout" {
		t.Fatalf("stdout record: %v %+v %v", ok, rec, attrs)
	}
	if d := time.Since(rec.Time); d < 0 || d > time.Minute {
		t.Fatalf("record time %v", rec.Time)
	}
	if _, attrs, ok := h.find("to-stderr"); !ok || attrs["spore.logger"] != "stderr" {
		t.Fatalf("stderr record: %v %v", ok, attrs)
	}
	h.mu.Lock()
	debug := 0
	for _, r := range h.recs {
		if r.Level == slog.LevelDebug {
			debug++
		}
	}
	h.mu.Unlock()
	if debug == 0 {
		t.Fatal("no DEBUG records although the handler enables them")
	}

	// A handler at WARN: the agents are told, and INFO lines are not sent.
	quiet := &levelRecorder{recorder: recorder{}, min: slog.LevelWarn}
	r2 := newRouter(t, spore.WithLogger(slog.New(quiet)))
	c2 := must(r2.Local(ctx, nil))
	must(c2.Call(ctx, "proc.run", spore.Args{"shell": "echo quiet-line", "stream": true}))
	r2.Close()
	if _, _, ok := quiet.find("quiet-line"); ok {
		t.Fatal("an INFO record reached a WARN handler")
	}
}

type levelRecorder struct {
	recorder
	min slog.Level
}

func (h *levelRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func TestConcurrentGoroutines(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(ctx, "proc.run", spore.Args{"argv": []string{"sleep", "0.5"}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(t0); d > 1500*time.Millisecond {
		t.Fatalf("four 0.5 s calls took %v: they did not overlap", d)
	}
	errs := make(chan error, 8)
	for n := 0; n < 8; n++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				var got []int
				res, err := c.Call(ctx, "sys.echo", spore.Args{"value": []int{n, i}})
				if err == nil {
					err = res.Decode(&got)
				}
				if err != nil || len(got) != 2 || got[0] != n || got[1] != i {
					errs <- errors.New("wrong reply " + string(res.JSON))
					return
				}
			}
		}(n)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestObjectsFreedInAnyOrder(t *testing.T) {
	ctx := bg(t)
	r, err := spore.NewRouter()
	if err != nil {
		t.Fatal(err)
	}
	a := must(r.Local(ctx, nil))
	b := must(r.Fork(ctx, a, nil))
	ch := must(b.Chain())
	p := must(b.CallAsync("proc.run", spore.Args{"argv": []string{"sleep", "30"}}))
	r.Close()
	if _, err := b.Call(ctx, "sys.ping", nil); err == nil {
		t.Fatal("a call after Close succeeded")
	}
	if _, err := p.Wait(ctx); !errors.Is(err, spore.ErrShutdown) && !errors.Is(err, spore.ErrDisconnected) {
		t.Fatalf("pending call at Close: %v", err)
	}
	if _, err := r.Local(ctx, nil); !errors.Is(err, spore.ErrShutdown) {
		t.Fatalf("connect after Close: %v", err)
	}
	a.Close()
	ch.Close()
	p.Close()
	b.Close()
	b.Close()
	r.Close() // idempotent
	requireNoDescendants(t)

	// A blocked call is released by Close from another goroutine.
	r, _ = spore.NewRouter()
	c := must(r.Local(ctx, nil))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), "proc.run", spore.Args{"argv": []string{"sleep", "30"}})
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	r.Close()
	if err := <-errc; !errors.Is(err, spore.ErrShutdown) && !errors.Is(err, spore.ErrDisconnected) {
		t.Fatalf("blocked call at Close: %v", err)
	}
	requireNoDescendants(t)
}

// Handles left to the garbage collector: the Router's finalizer closes it,
// so its agents exit, and nothing crashes whatever order the finalizers run in.
func TestGarbageCollectorFreesEverything(t *testing.T) {
	ctx := bg(t)
	func() {
		for i := 0; i < 3; i++ {
			r, err := spore.NewRouter(spore.WithoutLogs())
			if err != nil {
				t.Fatal(err)
			}
			c := must(r.Local(ctx, nil))
			f := must(r.Fork(ctx, c, nil))
			must(f.CallAsync("sys.ping", nil))
			must(c.Chain())
			must(f.Call(ctx, "sys.ping", nil))
		}
		r, _ := spore.NewRouter()
		c := must(r.Local(ctx, nil))
		r = nil
		runtime.GC()
		// The context keeps its router alive.
		must(c.Call(ctx, "sys.ping", nil))
	}()
	end := time.Now().Add(15 * time.Second)
	for len(descendants()) > 0 && time.Now().Before(end) {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	requireNoDescendants(t)
}

// harnessEnv reads the variables of the test harness (tests/harness: real
// accounts, sudo and doas rules and an sshd on 127.0.0.1, made by the ctest
// fixture as root), or skips the test when there is none.
func harnessEnv(t *testing.T) map[string]string {
	t.Helper()
	dir := os.Getenv("SPORE_TEST_HARNESS")
	env := map[string]string{}
	for _, f := range []string{dir + "/env", dir + "/sshd/env"} {
		b, err := os.ReadFile(f)
		if dir == "" || err != nil {
			t.Skipf("no test harness (%s): run as root under ctest", f)
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
			if ok && strings.HasPrefix(line, "export ") {
				env[k] = strings.Trim(v, "'")
			}
		}
	}
	return env
}

func TestTransportsAndTheirErrors(t *testing.T) {
	env := harnessEnv(t)
	r := newRouter(t)
	ctx := bg(t)
	ssh := func(user string, opts spore.Options) (*spore.Context, error) {
		o := spore.Options{"username": user, "port": env["SPORE_TEST_SSHD_PORT"],
			"known_hosts_file": env["SPORE_TEST_KNOWN_HOSTS"], "connect_timeout": 20 * time.Second}
		for k, v := range opts {
			o[k] = v
		}
		if p, err := strconv.Atoi(env["SPORE_TEST_SSHD_PORT"]); err == nil {
			o["port"] = p
		}
		return r.SSH(ctx, env["SPORE_TEST_SSHD_HOST"], nil, o)
	}
	c, err := ssh("spore-test-sudo-nopw", spore.Options{"identity_file": env["SPORE_TEST_KEY"]})
	if err != nil {
		t.Fatal(err)
	}
	if u := must(spore.CallAs[map[string]any](ctx, c, "sys.info", nil))["user"]; u != "spore-test-sudo-nopw" {
		t.Fatalf("ssh context runs as %v", u)
	}
	s := must(r.Sudo(ctx, "spore-test-target", c, nil))
	if u := must(spore.CallAs[map[string]any](ctx, s, "sys.info", nil))["user"]; u != "spore-test-target" {
		t.Fatalf("sudo through ssh runs as %v", u)
	}

	_, err = ssh("spore-test-key", spore.Options{"identity_file": env["SPORE_TEST_KEY"], "known_hosts_file": "/dev/null"})
	if !errors.Is(err, spore.ErrHostKey) {
		t.Fatalf("unknown host key: %v", err)
	}
	_, err = ssh("spore-test-pw", spore.Options{"password": "not-the-password"})
	if !errors.Is(err, spore.ErrAuth) {
		t.Fatalf("wrong ssh password: %v", err)
	}
	pw := must(ssh("spore-test-sudo-pw", spore.Options{"identity_file": env["SPORE_TEST_KEY"]}))
	if _, err = r.Sudo(ctx, "", pw, nil); !errors.Is(err, spore.ErrPasswordRequired) {
		t.Fatalf("sudo without the password it needs: %v", err)
	}
	if _, err = r.Sudo(ctx, "", pw, spore.Options{"password": "not-the-password"}); !errors.Is(err, spore.ErrAuth) {
		t.Fatalf("sudo with a wrong password: %v", err)
	}
	nosudo := must(ssh("spore-test-nosudo", spore.Options{"identity_file": env["SPORE_TEST_KEY"]}))
	_, err = r.Sudo(ctx, "", nosudo, spore.Options{"password": env["SPORE_TEST_PW_NOSUDO"]})
	var e *spore.Error
	if !errors.Is(err, spore.ErrDenied) || !errors.As(err, &e) || !strings.Contains(e.Context, "sudo") {
		t.Fatalf("sudo by a user who may not: %v", err)
	}
	for k, v := range env {
		if strings.HasPrefix(k, "SPORE_TEST_PW_") && v != "" && strings.Contains(err.Error(), v) {
			t.Fatal("an error message shows a password")
		}
	}
}

func TestFiles(t *testing.T) {
	r := newRouter(t)
	ctx := bg(t)
	c := must(r.Local(ctx, nil))
	child := must(r.Fork(ctx, c, nil))
	dir, err := os.MkdirTemp("", "spore-gotest-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	blob := bytes.Repeat([]byte("0123456789abcdef\x00\xff"), 200000)
	src := dir + "/src"
	if err := os.WriteFile(src, blob, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*spore.Context{c, child} {
		if err := x.PutFile(ctx, src, dir+"/dst", nil); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dir + "/dst"); !bytes.Equal(got, blob) {
			t.Fatal("put_file content differs")
		}
		if st, _ := os.Stat(dir + "/dst"); st.Mode().Perm() != 0o640 {
			t.Fatalf("mode %v", st.Mode())
		}
		if err := x.GetFile(ctx, dir+"/dst", dir+"/back", spore.Options{"mode": 0o600}); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dir + "/back"); !bytes.Equal(got, blob) {
			t.Fatal("get_file content differs")
		}
		if err := x.PutBytes(ctx, []byte("small"), dir+"/small", spore.Options{"sync": false}); err != nil {
			t.Fatal(err)
		}
		if got := must(x.GetBytes(ctx, dir+"/small", nil)); string(got) != "small" {
			t.Fatalf("get_bytes %q", got)
		}
	}
	if _, err := c.GetBytes(ctx, "/nonexistent/spore", nil); !errors.Is(err, spore.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	if err := c.PutFile(ctx, src, "/nonexistent/dir/x", nil); !errors.Is(err, spore.ErrNotFound) {
		t.Fatalf("missing directory: %v", err)
	}
	if _, err := c.GetBytes(ctx, src, spore.Options{"max_size": 1024}); !errors.Is(err, spore.ErrTooBig) {
		t.Fatalf("max_size: %v", err)
	}
	if _, err := c.GetBytes(ctx, "/dev/null", nil); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("a device is not a file to transfer: %v", err)
	}
	must(0, c.PutBytes(ctx, nil, dir+"/empty", nil))
	if empty := must(c.GetBytes(ctx, dir+"/empty", nil)); empty == nil || len(empty) != 0 {
		t.Fatalf("empty file: %v", empty)
	}
	if err := os.MkdirAll(dir+"/tree/a", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/tree/a/f", []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	must(0, child.PutTree(ctx, dir+"/tree", dir+"/copy", nil))
	must(0, child.GetTree(ctx, dir+"/copy", dir+"/back-tree", nil))
	if got, _ := os.ReadFile(dir + "/back-tree/a/f"); string(got) != "deep" {
		t.Fatalf("tree round trip: %q", got)
	}
	if err := c.PutTree(ctx, dir+"/nothing", dir+"/x", nil); !errors.Is(err, spore.ErrNotFound) {
		t.Fatalf("missing tree: %v", err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := c.PutFile(ctx, src, dir+"/t"+strconv.Itoa(i), nil); err != nil {
				t.Error(err)
			}
		}(i)
	}
	must(c.Call(ctx, "sys.ping", nil))
	wg.Wait()
}
