package spore

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"spore.dev/spore/internal/capi"
)

// Code is a spore error code (the SPORE_E* numbers of spore/errors.h). Each
// constant is also an error, so errors.Is(err, spore.ErrTimedOut) tells
// what failed without errors.As.
type Code int

// The error codes. Their numbers are fixed by the C library and never reused.
const (
	ErrInvalid          Code = -1  // invalid argument (unknown method or option, bad value)
	ErrNoMem            Code = -2  // out of memory
	ErrConnect          Code = -3  // the context could not be started
	ErrTimedOut         Code = -4  // a wait ran out (also matches context.DeadlineExceeded when the deadline caused it)
	ErrDisconnected     Code = -5  // the context went away
	ErrNoFunc           Code = -6  // the context knows no such function
	ErrBadArgs          Code = -7  // the function refused its arguments
	ErrRemote           Code = -8  // the function failed in the context (see Error.RemoteType)
	ErrRefused          Code = -9  // refused by policy
	ErrTooBig           Code = -10 // a message was larger than max_message_size
	ErrProto            Code = -11 // protocol error
	ErrNoRoute          Code = -12 // no route to the context
	ErrShutdown         Code = -13 // the router is shutting down or closed
	ErrInternal         Code = -14 // internal error
	ErrUnknown          Code = -15 // unknown error
	ErrAuth             Code = -16 // authentication failed
	ErrPasswordRequired Code = -17 // a password is needed and none was given
	ErrHostKey          Code = -18 // host key verification failed
	ErrDenied           Code = -19 // not allowed to become that user
	ErrNotFound         Code = -20 // no such file or directory (file transfers)
	ErrPermission       Code = -21 // permission denied (file transfers)
	ErrNoSpace          Code = -22 // no space left on device (file transfers)
	ErrChanged          Code = -23 // the source file changed size during a transfer
	ErrUnresponsive     Code = -24 // a hop on the way stopped answering keepalives
	ErrNoPython         Code = -25 // no usable Python interpreter in the context
	ErrWorkerDied       Code = -26 // the context's Python worker died during the call
)

var codeNames = map[Code]string{
	ErrInvalid: "EINVAL", ErrNoMem: "ENOMEM", ErrConnect: "ECONNECT", ErrTimedOut: "ETIMEDOUT",
	ErrDisconnected: "EDISCONNECTED", ErrNoFunc: "ENOFUNC", ErrBadArgs: "EBADARGS", ErrRemote: "EREMOTE",
	ErrRefused: "EREFUSED", ErrTooBig: "ETOOBIG", ErrProto: "EPROTO", ErrNoRoute: "ENOROUTE",
	ErrShutdown: "ESHUTDOWN", ErrInternal: "EINTERNAL", ErrUnknown: "EUNKNOWN", ErrAuth: "EAUTH",
	ErrPasswordRequired: "EPASSREQ", ErrHostKey: "EHOSTKEY", ErrDenied: "EDENIED",
	ErrNotFound: "ENOENT", ErrPermission: "EACCES", ErrNoSpace: "ENOSPC", ErrChanged: "ECHANGED",
	ErrUnresponsive: "EUNRESPONSIVE", ErrNoPython: "ENOPYTHON", ErrWorkerDied: "EWORKER",
}

// Codes lists every error code, in the C library's order.
func Codes() []Code {
	out := make([]Code, 0, len(codeNames))
	for c := ErrInvalid; c >= ErrWorkerDied; c-- {
		out = append(out, c)
	}
	return out
}

// Name is the code's C name without the SPORE_ prefix, e.g. "ENOFUNC".
func (c Code) Name() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("E%d", int(c))
}

// Error is the C library's short description of the code.
func (c Code) Error() string { return "spore: " + capi.Spore_strerror(int(c)) }

// Error is the detail of a failure reported by spore.
type Error struct {
	Code       Code   // what failed
	Message    string // human readable; names the context
	RemoteType string // for ErrRemote: the error type in the context, e.g. "FileNotFoundError"
	Context    string // name of the context involved, if any
	Function   string // name of the function called, if any
	Traceback  string // a Python function's formatted remote traceback, if any
	cause      error  // a context.Context error that ended the wait, if that is what happened
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code.Error()
	}
	return "spore: " + e.Message
}

// Unwrap gives the Code (and the context.Context error when the deadline
// of the caller's context ended the wait), for errors.Is.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Code, e.cause}
	}
	return []error{e.Code}
}

func errorFrom(code int, e capi.Spore_error) *Error {
	return &Error{Code: Code(code), Message: e.GetMessage(), RemoteType: e.GetRemote_type(),
		Context: e.GetContext(), Function: e.GetFunction(), Traceback: e.GetTraceback()}
}

// check runs f, a C call returning a status, and turns a failure into an
// *Error. spore_last_error is per thread, so the goroutine stays on its OS
// thread from the call until the detail is read.
func check(f func() int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if rc := f(); rc < 0 {
		return errorFrom(rc, capi.Spore_last_error())
	}
	return nil
}

// withDeadlineCause makes a timeout that ctx's deadline caused (through a C
// timeout derived from it) match context.DeadlineExceeded too. The C
// timeout is whole milliseconds, rounded down, so it may run out a moment
// before ctx notices its deadline.
func withDeadlineCause(ctx context.Context, err error) error {
	e, ok := err.(*Error)
	if !ok || e.Code != ErrTimedOut {
		return err
	}
	if dl, has := ctx.Deadline(); has && (ctx.Err() == context.DeadlineExceeded || time.Until(dl) < 2*time.Millisecond) {
		e.cause = context.DeadlineExceeded
	}
	return err
}

// abandoned counts the goroutines still waiting on work whose caller's
// context ended, so that tests can tell when what they dropped is gone.
var abandoned sync.WaitGroup

// untilDone runs f and returns what it returns, unless ctx ends first:
// then it returns the zero T and ctx's error (see waitError) at once, and
// hands what f yields later to drop. f runs on the calling goroutine when
// ctx can never end.
func untilDone[T any](ctx context.Context, f func() (T, error), drop func(T), what, name, function string) (T, error) {
	if ctx.Done() == nil {
		return f()
	}
	type outcome struct {
		v   T
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		v, err := f()
		done <- outcome{v, err}
	}()
	select {
	case o := <-done:
		return o.v, o.err
	case <-ctx.Done():
		abandoned.Add(1)
		go func() {
			defer abandoned.Done()
			if o := <-done; o.err == nil {
				drop(o.v)
			}
		}()
		var zero T
		return zero, waitError(ctx, what, name, function)
	}
}

// waitError is the error of a wait that the caller's context.Context ended.
func waitError(ctx context.Context, what, name, function string) error {
	err := ctx.Err()
	if err == context.DeadlineExceeded {
		return &Error{Code: ErrTimedOut, Message: what + ": context deadline exceeded", Context: name,
			Function: function, cause: err}
	}
	return fmt.Errorf("spore: %s: %w", what, err)
}
