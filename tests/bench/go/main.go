// Go binding benchmarks (scripts/bench bindings), under metric names that
// report.py pairs with the C figures of core_bench:
//
//	go_call_rtt         c.Call(ctx, "sys.ping", nil), blocking (us)
//	go_pipelined_async  N c.CallAsync("sys.ping"), then Wait of each (calls/s)
//
// Built in the module build/go (CMake copies it to internal/bench). Needs
// SPORE_AGENT_PATH; BENCH_QUICK=1 for small counts. Output:
// "sample <metric> <unit> <v>...".
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"spore.dev/spore"
)

var quick = os.Getenv("BENCH_QUICK") != "" && os.Getenv("BENCH_QUICK") != "0"

func runs(n int) int {
	if quick {
		return 3
	}
	return n
}

func iters(n int) int {
	if quick {
		return max(1, n/10)
	}
	return n
}

func emit(metric, unit string, values []float64) {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = fmt.Sprintf("%.6g", v)
	}
	fmt.Printf("sample %s %s %s\n", metric, unit, strings.Join(parts, " "))
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go bench:", err)
		os.Exit(1)
	}
}

func run() error {
	r, err := spore.NewRouter(spore.WithoutLogs())
	if err != nil {
		return err
	}
	defer r.Close()
	ctx := context.Background()

	var values []float64
	for i := 0; i < runs(9); i++ {
		c, err := r.Local(ctx, nil)
		if err != nil {
			return err
		}
		for j := 0; j < 100; j++ {
			if _, err := c.Call(ctx, "sys.ping", nil); err != nil {
				return err
			}
		}
		n := iters(3000)
		t0 := time.Now()
		for j := 0; j < n; j++ {
			if _, err := c.Call(ctx, "sys.ping", nil); err != nil {
				return err
			}
		}
		values = append(values, float64(time.Since(t0).Microseconds())/float64(n))
		c.Shutdown(ctx)
		c.Close()
	}
	emit("go_call_rtt", "us", values)

	c, err := r.Local(ctx, nil)
	if err != nil {
		return err
	}
	values = values[:0]
	for i := 0; i < runs(7); i++ {
		n := iters(20000)
		t0 := time.Now()
		ps := make([]*spore.Pending, n)
		for j := range ps {
			if ps[j], err = c.CallAsync("sys.ping", nil); err != nil {
				return err
			}
		}
		for _, p := range ps {
			if _, err := p.Wait(ctx); err != nil {
				return err
			}
			p.Close()
		}
		values = append(values, float64(n)/time.Since(t0).Seconds())
	}
	emit("go_pipelined_async", "calls/s", values)
	return nil
}
