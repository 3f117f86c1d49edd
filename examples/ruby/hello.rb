#!/usr/bin/ruby
# hello.rb: the same small task as examples/go/hello and examples/python/hello.py.
#
# Opens a local context and a fork through it, prints sys.info of both, runs a
# command, and shows the command's output arriving as forwarded log records in
# a Logger.
#
#   ruby examples/ruby/hello.rb      (with ruby-spore installed, or -I build/ruby)
require "logger"
require "spore"

logger = Logger.new($stdout, level: Logger::INFO)
logger.formatter = proc { |sev, _time, prog, msg| "#{sev} #{prog} #{msg}\n" }

Spore::Router.open(logger: logger) do |router|
  local = router.local(name: "hello")
  child = router.fork(local)
  [local, child].each do |ctx|
    info = ctx.call("sys.info")
    $stdout.write(format("%-12s pid %s, user %s, host %s\n", ctx.name, info["pid"], info["user"], info["hostname"]))
  end

  # The output lines of a streamed command come back as log records.
  result = child.call("proc.run", argv: ["sh", "-c", "echo hello from $(id -un); echo to stderr >&2"], stream: true)
  $stdout.write("command exit status: #{result['rc']}\n")

  # Each error code has its exception class under Spore::Error.
  begin
    child.call("no.such.function")
  rescue Spore::UnknownFunction => e
    $stdout.write("expected failure: #{e.class.name} (#{e.function} in #{e.context})\n")
  end
end
