# Ruby binding benchmarks (scripts/bench bindings), under metric names that
# report.py pairs with the C figures of core_bench:
#
#   rb_call_rtt         ctx.call("sys.ping"), blocking (us)
#   rb_pipelined_async  N ctx.call_async("sys.ping"), then value of each (calls/s)
#
# Run with -I build/ruby and SPORE_AGENT_PATH; BENCH_QUICK=1 for small counts.
# Output: "sample <metric> <unit> <v>...".
require "spore"

QUICK = !["", "0", nil].include?(ENV["BENCH_QUICK"])

def runs(n) = QUICK ? 3 : n
def iters(n) = QUICK ? [1, n / 10].max : n
def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def emit(metric, unit, values)
  puts "sample #{metric} #{unit} #{values.map { |v| format('%.6g', v) }.join(' ')}"
  $stdout.flush
end

Spore::Router.open do |r|
  values = []
  runs(9).times do
    ctx = r.local
    100.times { ctx.call("sys.ping") }
    n = iters(3000)
    t0 = now
    n.times { ctx.call("sys.ping") }
    values << (now - t0) / n * 1e6
    ctx.shutdown
  end
  emit("rb_call_rtt", "us", values)

  ctx = r.local
  values = []
  runs(7).times do
    n = iters(20_000)
    t0 = now
    calls = Array.new(n) { ctx.call_async("sys.ping") }
    calls.each(&:value)
    values << n / (now - t0)
  end
  emit("rb_pipelined_async", "calls/s", values)
end
