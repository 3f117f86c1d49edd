package spore

import (
	"context"
	"log/slog"
	"math"
	"time"

	"spore.dev/spore/internal/capi"
)

// The C levels are Python's numbers: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR.
func toSlogLevel(l int) slog.Level {
	switch {
	case l < 20:
		return slog.LevelDebug
	case l < 30:
		return slog.LevelInfo
	case l < 40:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func toSporeLevel(l slog.Level) int {
	switch {
	case l <= slog.LevelDebug:
		return 10
	case l <= slog.LevelInfo:
		return 20
	case l <= slog.LevelWarn:
		return 30
	}
	return 40
}

// lowestEnabled is the lowest spore level the handler wants, so records it
// would drop are not even sent by the agents.
func lowestEnabled(h slog.Handler) int {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if h.Enabled(context.Background(), l) {
			return toSporeLevel(l)
		}
	}
	return 40
}

// pumpLogs moves records from the router to the handler until the router
// is closed and its queue is empty. Each record keeps the time it was made
// in its context, and carries the group spore{context, logger}.
func pumpLogs(h capi.SwigcptrStruct_SS_spore_router, handler slog.Handler, done chan<- struct{}) {
	defer close(done)
	ctx := context.Background()
	var out [1]uintptr
	for {
		if capi.Spore_router_next_log(h, out[:], -1) != 0 {
			return // ESHUTDOWN: closed and drained
		}
		rec := capi.SwigcptrStruct_SS_spore_log_record(out[0])
		level := toSlogLevel(capi.Spore_log_record_level(rec))
		if handler.Enabled(ctx, level) {
			sec, frac := math.Modf(capi.Spore_log_record_time(rec))
			r := slog.NewRecord(time.Unix(int64(sec), int64(frac*1e9)), level, capi.Spore_log_record_message(rec), 0)
			r.AddAttrs(slog.Group("spore",
				slog.String("context", capi.Spore_log_record_context(rec)),
				slog.String("logger", capi.Spore_log_record_logger(rec))))
			_ = handler.Handle(ctx, r)
		}
		capi.Spore_log_record_free(rec)
	}
}
