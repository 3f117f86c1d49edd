// hello: the same small task as examples/hello.c, hello.py and hello.rb.
// It opens a local context and a fork through it, prints sys.info of both,
// runs a command, and shows the command's output arriving as forwarded log
// records in log/slog.
//
//	go run ./examples/hello   (from build/go, or with spore installed)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"spore.dev/spore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run() error {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r, err := spore.NewRouter(spore.WithLogger(logger))
	if err != nil {
		return err
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	local, err := r.Local(ctx, spore.Options{"name": "hello"})
	if err != nil {
		return err
	}
	child, err := r.Fork(ctx, local, nil)
	if err != nil {
		return err
	}
	for _, c := range []*spore.Context{local, child} {
		info, err := spore.CallAs[map[string]any](ctx, c, "sys.info", nil)
		if err != nil {
			return err
		}
		fmt.Printf("%-12s pid %v, user %v, host %v\n", c.Name(), info["pid"], info["user"], info["hostname"])
	}

	// The output lines of a streamed command come back as log records.
	res, err := spore.CallAs[map[string]any](ctx, child, "proc.run",
		spore.Args{"argv": []string{"sh", "-c", "echo hello from $(id -un); echo to stderr >&2"}, "stream": true})
	if err != nil {
		return err
	}
	fmt.Println("command exit status:", res["rc"])

	// Errors carry their code: errors.Is for the kind, errors.As for detail.
	_, err = child.Call(ctx, "no.such.function", nil)
	var e *spore.Error
	if errors.Is(err, spore.ErrNoFunc) && errors.As(err, &e) {
		fmt.Printf("expected failure: %s (%s in %s)\n", e.Code.Name(), e.Function, e.Context)
	}
	time.Sleep(100 * time.Millisecond) // let the last records reach the logger before Close
	return nil
}
