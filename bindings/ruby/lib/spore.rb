# spore for Ruby: open contexts, run calls in them, receive their logs.
#
#   require "spore"
#   Spore::Router.open do |r|
#     ctx = r.local
#     puts ctx.call("sys.info")["hostname"]
#     fork = r.fork(ctx)
#     p fork.call("fs.stat", path: "/etc")
#     ctx.start(["cat"]) { |pr| pr.stdin.puts("hi"); pr.stdin.close; pr.stdout.read }
#   end
#
# A thin layer over the SWIG extension spore_c: handles become objects freed
# by the garbage collector in any order; a negative status raises a subclass
# of Spore::Error; calls that wait do so without the GVL, in short slices so
# that Thread#raise and Ctrl-C get through; log records go to a Logger from a
# Ruby thread (spore never calls into Ruby from a thread of its own).
require "json"
require "logger"
require "spore_c"

module Spore
  C = ::Spore_c
  WAIT_SLICE_MS = 50

  # A result that came with a binary part.
  Reply = Struct.new(:value, :data)

  def self.version
    C.spore_version_string
  end

  # A spore failure: code (the C SPORE_E* value), message, and where it
  # applies remote_type, context, function and (a Python function's)
  # remote_traceback.
  class Error < StandardError
    attr_reader :code, :remote_type, :context, :function, :remote_traceback

    def initialize(message, code = nil, remote_type = nil, context = nil, function = nil, remote_traceback = nil)
      super(message)
      @code = code || self.class.const_get(:CODE)
      @remote_type = remote_type
      @context = context
      @function = function
      @remote_traceback = remote_traceback
    end
  end

  CLASS_NAMES = {
    "EINVAL" => "InvalidArgument", "ENOMEM" => "OutOfMemory", "ECONNECT" => "ConnectError",
    "ETIMEDOUT" => "Timeout", "EDISCONNECTED" => "Disconnected", "ENOFUNC" => "UnknownFunction",
    "EBADARGS" => "BadArguments", "EREMOTE" => "RemoteError", "EREFUSED" => "Refused",
    "ETOOBIG" => "MessageTooLarge", "EPROTO" => "ProtocolError", "ENOROUTE" => "NoRoute",
    "ESHUTDOWN" => "ShutDown", "EINTERNAL" => "InternalError", "EUNKNOWN" => "UnknownError",
    "EAUTH" => "AuthenticationFailed", "EPASSREQ" => "PasswordRequired", "EHOSTKEY" => "HostKeyError",
    "EDENIED" => "Denied", "ENOENT" => "NotFound", "EACCES" => "PermissionDenied", "ENOSPC" => "NoSpace",
    "ECHANGED" => "FileChanged", "EUNRESPONSIVE" => "Unresponsive",
    "ENOPYTHON" => "PythonNotFound", "EWORKER" => "WorkerDied"
  }.freeze
  BY_CODE = {}
  CLASS_NAMES.each do |name, class_name|
    code = C.const_get("SPORE_#{name}")
    klass = Class.new(Error)
    klass.const_set(:CODE, code)
    const_set(class_name, klass)
    BY_CODE[code] = klass
  end

  def self.error_from(e)
    klass = BY_CODE[e.code] || UnknownError
    empty = ->(s) { s.nil? || s.empty? ? nil : s }
    klass.new(e.message || C.spore_strerror(e.code), e.code, empty.(e.remote_type), empty.(e.context),
              empty.(e.function), empty.(e.traceback))
  end

  def self.check(rc)
    raise error_from(C.spore_last_error) if rc < 0
    rc
  end

  # A C options object from a Hash (nil when empty); the caller frees it.
  def self.options(opts)
    return nil if opts.nil? || opts.empty?
    rc, o = C.spore_options_new
    check(rc)
    begin
      opts.each do |key, value|
        next if value.nil?
        k = key.to_s
        rc = case value
             when true, false then C.spore_options_set_bool(o, k, value ? 1 : 0)
             when Integer then C.spore_options_set_int(o, k, value)
             when Array then value.map { |w| C.spore_options_add_str(o, k, w.to_s) }.min || 0
             else C.spore_options_set_str(o, k, value.to_s)
             end
        check(rc)
      end
    rescue StandardError
      C.spore_options_free(o)
      raise
    end
    o
  end

  def self.decode(json, data)
    value = json.nil? || json.empty? ? nil : JSON.parse(json)
    data.nil? || data.empty? ? value : Reply.new(value, data.b)
  end

  # Waits for a call in slices, without the GVL while in C.
  def self.wait(pending, timeout)
    remaining = timeout && (timeout * 1000).to_i
    loop do
      slice = remaining ? [[WAIT_SLICE_MS, remaining].min, 0].max : WAIT_SLICE_MS
      rc, json, data = C.spore_rb_wait_result(pending, slice)
      # ETIMEDOUT is this slice running out (no error recorded on the call
      # yet) or the call's own failure.
      if rc == C::SPORE_ETIMEDOUT && C.spore_call_error(pending).code == C::SPORE_OK
        if remaining
          remaining -= slice
          raise Timeout.new("call timed out after #{(timeout * 1000).to_i} ms", C::SPORE_ETIMEDOUT) if remaining <= 0
        end
        next
      end
      raise error_from(C.spore_call_error(pending)) if rc < 0
      return decode(json, data)
    end
  end

  LEVELS = {
    C::SPORE_LOG_DEBUG => Logger::DEBUG, C::SPORE_LOG_INFO => Logger::INFO,
    C::SPORE_LOG_WARNING => Logger::WARN, C::SPORE_LOG_ERROR => Logger::ERROR
  }.freeze
  C_LEVEL = { Logger::DEBUG => C::SPORE_LOG_DEBUG, Logger::INFO => C::SPORE_LOG_INFO,
              Logger::WARN => C::SPORE_LOG_WARNING }.freeze

  # One router: the I/O thread and every context opened from it.
  class Router
    # Opens a router; with a block, yields it and closes it after.
    def self.open(**opts)
      router = new(**opts)
      return router unless block_given?
      begin
        yield router
      ensure
        router.close
      end
    end

    # logger: a Logger for the agents' records (progname "spore.<context>");
    # its level is pushed to the agents. Other keywords are router options.
    def initialize(logger: nil, attach: nil, **opts)
      @logger = logger
      opts[:log_level] ||= logger ? (C_LEVEL[logger.level] || C::SPORE_LOG_ERROR) : C::SPORE_LOG_WARNING
      o = Spore.options(opts)
      begin
        rc, handle = attach ? C.spore_rb_router_attach(attach.to_s, o) : C.spore_router_new(o)
        Spore.check(rc)
      ensure
        C.spore_options_free(o) if o
      end
      @handle = handle
      @closed = false
      @mutex = Mutex.new
      @log_thread = @logger && Thread.new { pump_logs }
      ObjectSpace.define_finalizer(self, self.class.finalizer(handle, @log_thread))
    end

    def self.finalizer(handle, _thread)
      proc { C.spore_rb_router_free(handle) unless handle.nil? }
    end

    # A router attached to the router listening at path (see #listen): its
    # contexts are the listener's. connect asks the listener and by default
    # returns its live context opened with the same method, options and via
    # (reuse: false for a new one); find looks the listener's contexts up by
    # name. Options: connect_timeout (ms), log_level, log_queue_size, and
    # logger: as for new. With a block, yields it and closes it after (the
    # contexts stay up in the listener).
    def self.attach(path, **opts, &block)
      open(attach: path, **opts, &block)
    end

    # Accepts attached routers on a Unix socket at path: other processes of
    # this user then use this router's contexts with its authority. The
    # socket gets mode 0600 in a directory of this user with mode 0700
    # (created so when missing).
    def listen(path)
      Spore.check(C.spore_router_listen(handle, path.to_s))
      self
    end

    # The live context named name (attached: one the listener has). Raises
    # Spore::NotFound when there is none.
    def find(name)
      rc, h = C.spore_rb_context_find(handle, name.to_s)
      Spore.check(rc)
      Context.new(self, h)
    end

    def handle
      raise ShutDown.new("the router is closed", C::SPORE_ESHUTDOWN) if @closed
      @handle
    end

    def closed?
      @closed
    end

    # Shuts every context down and frees the router. Idempotent.
    def close
      h = @mutex.synchronize do
        next nil if @closed
        @closed = true
        @handle
      end
      return if h.nil?
      # The shutdown first: the log thread then takes the records still
      # queued and leaves, so none is lost, before the handle goes.
      C.spore_rb_router_close(h)
      @log_thread&.join
      ObjectSpace.undefine_finalizer(self)
      C.spore_rb_router_free(h)
    end

    # Opens a context with a connection method (docs/methods.md), through via.
    def connect(method, via: nil, **opts)
      o = Spore.options(opts)
      begin
        rc, h = C.spore_rb_connect(handle, method.to_s, o, via&.handle)
        Spore.check(rc)
      ensure
        C.spore_options_free(o) if o
      end
      Context.new(self, h)
    end

    def local(**opts) = connect("local", **opts)
    def fork(via, **opts) = connect("fork", via: via, **opts)
    def ssh(hostname, via: nil, **opts) = connect("ssh", via: via, hostname: hostname, **opts)
    def sudo(username = "root", via: nil, **opts) = connect("sudo", via: via, username: username, **opts)
    def su(username = "root", via: nil, **opts) = connect("su", via: via, username: username, **opts)
    def doas(username = "root", via: nil, **opts) = connect("doas", via: via, username: username, **opts)

    private

    # Until the router is closed and its queue empty (ESHUTDOWN).
    def pump_logs
      loop do
        rc, rec = C.spore_rb_next_log(@handle, 100)
        next if rc == C::SPORE_ETIMEDOUT
        break if rc < 0
        begin
          name = C.spore_log_record_context(rec)
          name = "master" if name.nil? || name.empty?
          @logger.add(LEVELS[C.spore_log_record_level(rec)] || Logger::INFO, C.spore_log_record_message(rec),
                      "spore.#{name}")
        ensure
          C.spore_log_record_free(rec)
        end
      end
    end
  end

  # A context: one agent process, reached through its router.
  class Context
    attr_reader :id, :name, :router

    def initialize(router, handle)
      @router = router
      @handle = handle
      @id = C.spore_context_id(handle)
      @name = C.spore_context_name(handle)
      ObjectSpace.define_finalizer(self, self.class.finalizer(handle))
    end

    def self.finalizer(handle)
      proc { C.spore_context_free(handle) }
    end

    def handle
      @handle
    end

    def alive?
      C.spore_context_alive(@handle) == 1
    end

    # Runs function with keyword arguments (and binary data) and returns its
    # result: Ruby objects from the JSON, or a Reply when there is binary
    # data. timeout in seconds (nil: for ever).
    def call(function, data: nil, timeout: nil, **args)
      pending = start_call(function, data, args)
      begin
        Spore.wait(pending, timeout)
      ensure
        C.spore_call_free(pending)
      end
    end

    # Starts a call; returns a Spore::Call to wait on.
    def call_async(function, data: nil, **args)
      Call.new(start_call(function, data, args))
    end

    # File transfers (docs/c-api.md, "Files"), without the GVL. Keyword
    # options: mode, preserve_owner, preserve_mtime, sync, window, timeout
    # (ms), max_size (get_bytes).
    def put_file(local_path, remote_path, **opts)
      with_options(opts) { |o| Spore.check(C.spore_rb_put_file(@handle, local_path.to_s, remote_path.to_s, o)) }
      nil
    end

    def put_bytes(data, remote_path, **opts)
      frozen = data.to_s.b.freeze # nobody else can change it while the GVL is released
      with_options(opts) { |o| Spore.check(C.spore_rb_put_bytes(@handle, frozen, remote_path.to_s, o)) }
      nil
    end

    def get_file(remote_path, local_path, **opts)
      with_options(opts) { |o| Spore.check(C.spore_rb_get_file(@handle, remote_path.to_s, local_path.to_s, o)) }
      nil
    end

    def put_tree(local_dir, remote_dir, **opts)
      with_options(opts) { |o| Spore.check(C.spore_rb_put_tree(@handle, local_dir.to_s, remote_dir.to_s, o)) }
      nil
    end

    def get_tree(remote_dir, local_dir, **opts)
      with_options(opts) { |o| Spore.check(C.spore_rb_get_tree(@handle, remote_dir.to_s, local_dir.to_s, o)) }
      nil
    end

    # The content of remote_path as a binary String.
    def get_bytes(remote_path, **opts)
      res = with_options(opts) do |o|
        rc, r = C.spore_rb_get_bytes(@handle, remote_path.to_s, o)
        Spore.check(rc)
        r
      end
      begin
        C.spore_result_data(res).b
      ensure
        C.spore_result_free(res)
      end
    end

    # Starts a process in the context whose stdin, stdout and stderr are
    # flow-controlled streams (docs/c-api.md, "Process streams") and returns
    # a Spore::Process. argv is an Array, or a String run by /bin/sh -c (as
    # with Kernel#spawn; shell: says the same explicitly). env: variables to
    # set (a nil value unsets one), env_clear: start from an empty
    # environment, cwd:, pty: run it on a new pty of rows x cols (stdout
    # then carries all its output), window: bytes in flight each way,
    # timeout: seconds to wait for it to run (nil: no limit; on Spore::Timeout
    # the start is cancelled in the context, so the process does not run, or
    # is killed as soon as it does). With a block, yields the process and
    # closes it after (killing it if it still runs), returning the block's
    # value.
    def start(argv = nil, shell: nil, env: nil, env_clear: false, cwd: nil, pty: false, rows: 24, cols: 80,
              window: nil, timeout: 60)
      if argv.is_a?(String)
        raise ArgumentError, "a command String and shell: both given" if shell
        shell = argv
        argv = nil
      end
      args = { pty: pty ? true : false, rows: rows, cols: cols, env_clear: env_clear ? true : false }
      args[:argv] = argv.map(&:to_s) if argv
      args[:shell] = shell.to_s if shell
      args[:env] = env.to_h { |k, v| [k.to_s, v&.to_s] } if env
      args[:cwd] = cwd.to_s if cwd
      opts = { timeout_ms: timeout ? [(timeout * 1000).to_i, 0].max : -1 }
      opts[:window] = window if window
      h = with_options(opts) do |o|
        rc, handle = C.spore_rb_proc_start(@handle, JSON.generate(args), o)
        Spore.check(rc)
        handle
      end
      process = Process.new(self, h)
      return process unless block_given?
      begin
        yield process
      ensure
        process.close
      end
    end

    def shutdown(timeout = 5.0)
      Spore.check(C.spore_rb_context_shutdown(@handle, timeout ? (timeout * 1000).to_i : -1))
    end

    def inspect
      "#<Spore::Context #{@name} (id #{@id})>"
    end

    private

    def with_options(opts)
      o = Spore.options(opts)
      begin
        yield o
      ensure
        C.spore_options_free(o) if o
      end
    end

    def start_call(function, data, args)
      rc, pending = C.spore_call_async(@handle, function, args.empty? ? nil : JSON.generate(args), data)
      Spore.check(rc)
      pending
    end
  end

  # A call in flight.
  class Call
    def initialize(pending)
      @pending = pending
      @mutex = Mutex.new
      @done = false
      ObjectSpace.define_finalizer(self, self.class.finalizer(pending))
    end

    def self.finalizer(pending)
      proc { C.spore_call_free(pending) }
    end

    def done?
      @done || C.spore_call_done(@pending) == 1
    end

    # Waits for the result (timeout in seconds; nil: for ever). Raises the
    # call's error.
    def value(timeout = nil)
      @mutex.synchronize do
        return @result if @done
        @result = Spore.wait(@pending, timeout)
        @done = true
        @result
      end
    end
  end

  # A process started by Context#start. stdin is a writer (write, <<, print,
  # puts, close), stdout and stderr are readers (read, readpartial, gets,
  # each_line, eof?). Flow controlled both ways: a write waits while the
  # process does not read, and output nobody reads stays in the process's
  # own pipe. Every call that waits does so without the GVL; reads and waits
  # go in short slices, so Thread#raise and Ctrl-C get through. close (or
  # the garbage collector) kills a process that still runs.
  class Process
    # How a process ended: exitstatus (nil when a signal killed it), termsig
    # (nil when none did), as ::Process::Status names them.
    Status = Struct.new(:pid, :exitstatus, :termsig) do
      def exited? = termsig.nil?
      def signaled? = !termsig.nil?
      def success? = exited? ? exitstatus.zero? : nil

      def to_s
        if signaled?
          name = Signal.signame(termsig)
          "pid #{pid} #{name ? "SIG#{name}" : "signal"} (signal #{termsig})"
        else
          "pid #{pid} exit #{exitstatus}"
        end
      end

      def inspect = "#<Spore::Process::Status: #{self}>"
    end

    attr_reader :pid, :context, :stdin, :stdout, :stderr

    def initialize(context, handle)
      @context = context # keeps the router reachable while the process is used
      @handle = handle
      @pid = C.spore_process_pid(handle)
      # Calls in C with the handle: close waits for them to leave before it
      # frees it.
      @mutex = Mutex.new
      @idle = ConditionVariable.new
      @busy = 0
      @closing = false
      @wait_mutex = Mutex.new
      @status = nil
      @stdin = ProcessInput.new(self)
      @stdout = ProcessOutput.new(self, 1, "stdout")
      @stderr = ProcessOutput.new(self, 2, "stderr")
      ObjectSpace.define_finalizer(self, self.class.finalizer(handle))
    end

    def self.finalizer(handle)
      proc { C.spore_rb_process_free(handle) }
    end

    # Sends a signal to the process's group: a number, or a name such as
    # :TERM or "SIGKILL".
    def signal(sig)
      signum = Process.signal_number(sig)
      with_handle { |h| Spore.check(C.spore_rb_process_signal(h, signum)) }
      nil
    end

    # Sets the size of the process's pty (started with pty: true).
    def resize(rows, cols)
      with_handle { |h| Spore.check(C.spore_rb_process_resize(h, Integer(rows), Integer(cols))) }
      nil
    end

    # Waits for the process to exit and its output to be sent (output not
    # read yet stays readable) and returns its Status. timeout in seconds
    # (nil: for ever); raises Spore::Timeout when it runs out.
    def wait(timeout = nil)
      @wait_mutex.synchronize do
        return @status if @status
        remaining = timeout && (timeout * 1000).to_i
        loop do
          slice = remaining ? [[WAIT_SLICE_MS, remaining].min, 0].max : WAIT_SLICE_MS
          rc, code, sig = with_handle { |h| C.spore_rb_process_wait(h, slice) }
          return @status = Process.status(@pid, code, sig) if rc == C::SPORE_OK
          if rc == C::SPORE_ETIMEDOUT && (remaining.nil? || remaining > slice)
            remaining -= slice if remaining
            next
          end
          Spore.check(rc)
        end
      end
    end

    # Frees the handle, killing the process (and its group) if it still
    # runs. Idempotent. Threads inside a read, write or wait get an error.
    def close
      @mutex.synchronize do
        return nil if @closing
        @closing = true
        # A write may be waiting for a process that does not read, for as
        # long as it runs: ending the process ends the wait.
        C.spore_rb_process_signal(@handle, Signal.list.fetch("KILL")) if @busy.positive?
        @idle.wait(@mutex) while @busy.positive?
      end
      h = @handle
      @handle = nil
      ObjectSpace.undefine_finalizer(self)
      C.spore_rb_process_free(h)
      nil
    end

    def closed?
      @closing
    end

    def inspect
      "#<Spore::Process pid #{@pid} in #{@context.name}#{@closing ? " (closed)" : ""}>"
    end

    # --- used by the streams

    # Runs the block with the handle, which close does not free meanwhile.
    def with_handle
      @mutex.synchronize do
        check_open
        @busy += 1
      end
      begin
        yield @handle
      ensure
        @mutex.synchronize do
          @busy -= 1
          @idle.broadcast if @busy.zero?
        end
      end
    end

    def check_open
      raise InvalidArgument.new("the handle of process #{@pid} is closed", C::SPORE_EINVAL) if @closing
    end

    def self.status(pid, code, sig)
      sig.zero? ? Status.new(pid, code, nil) : Status.new(pid, nil, sig)
    end

    def self.signal_number(sig)
      return Integer(sig) if sig.is_a?(Integer)
      name = sig.to_s.delete_prefix("SIG")
      Signal.list.fetch(name) { raise ArgumentError, "unknown signal #{sig.inspect}" }
    end
  end

  # A process's stdin: an IO-like writer of bytes. A write waits while the
  # process does not read (timeout: seconds, nil for ever; a write that
  # runs out raises Spore::Timeout, part of it may have been sent). close
  # ends the input (^D on a pty).
  class ProcessInput
    attr_accessor :timeout

    def initialize(process)
      @process = process
      @closed = false
      @timeout = nil
    end

    # Writes the objects' to_s; returns the number of bytes written.
    def write(*objects)
      data = objects.map(&:to_s).join.b.freeze # nobody can change it while the GVL is released
      raise IOError, "closed stream" if @closed
      @process.check_open
      # A process that has exited fails the write (Spore::Disconnected), as
      # a closed pipe would: the C library knows once its exit is reported.
      return 0 if data.empty?
      ms = @timeout ? (@timeout * 1000).to_i : -1
      @process.with_handle { |h| Spore.check(C.spore_rb_process_write(h, data, ms)) }
      data.bytesize
    end

    def <<(object)
      write(object)
      self
    end

    def print(*objects)
      write(*objects)
      nil
    end

    # As IO#puts: a newline after each object that does not end with one;
    # Arrays are written element by element.
    def puts(*objects)
      lines = objects.flatten.map do |o|
        text = o.to_s
        text.end_with?("\n") ? text : "#{text}\n"
      end
      write(*(lines.empty? ? ["\n"] : lines))
      nil
    end

    def printf(format, *args)
      write(Kernel.format(format, *args))
      nil
    end

    # Nothing is buffered here: every write goes to the process.
    def flush = self
    def sync = true
    def sync=(_value); end

    # Ends the process's input. Idempotent.
    def close
      return nil if @closed
      @closed = true
      @process.with_handle { |h| Spore.check(C.spore_rb_process_close_stdin(h)) } unless @process.closed?
      nil
    end

    def closed?
      @closed
    end

    def inspect = "#<Spore::ProcessInput of #{@process.inspect}#{@closed ? " (closed)" : ""}>"
  end

  # A process's stdout or stderr: an IO-like reader. Sized reads
  # (read(n), readpartial) return binary Strings; lines and read() to the
  # end are tagged with Encoding.default_external, as IO's text reads are.
  # timeout: seconds any one read may wait (nil: for ever), then
  # Spore::Timeout. One thread reads at a time; others wait their turn.
  class ProcessOutput
    include Enumerable

    READ_SIZE = 64 * 1024 # bytes asked for at a time

    attr_accessor :timeout

    def initialize(process, fd, name)
      @process = process
      @fd = fd
      @name = name
      @buf = "".b
      @eof = false
      @closed = false
      @timeout = nil
      @mutex = Mutex.new
    end

    # As IO#read: with no length, everything up to the end ("" at the
    # end); with one, up to length bytes, fewer only at the end, nil there.
    def read(length = nil, outbuf = nil)
      @mutex.synchronize do
        check_open
        if length.nil?
          nil while fill
          data = take(@buf.bytesize).force_encoding(Encoding.default_external)
        else
          length = Integer(length)
          raise ArgumentError, "negative length #{length} given" if length.negative?
          return give("".b, outbuf) if length.zero?
          nil while @buf.bytesize < length && fill
          return give(nil, outbuf) if @buf.empty?
          data = take([length, @buf.bytesize].min)
        end
        give(data, outbuf)
      end
    end

    # As IO#readpartial: what has come (at least a byte, at most maxlen),
    # waiting only while there is nothing; EOFError at the end.
    def readpartial(maxlen, outbuf = nil)
      maxlen = Integer(maxlen)
      raise ArgumentError, "negative length #{maxlen} given" if maxlen.negative?
      @mutex.synchronize do
        check_open
        return give("".b, outbuf) if maxlen.zero?
        fill if @buf.empty?
        raise EOFError, "end of file reached" if @buf.empty?
        give(take([maxlen, @buf.bytesize].min), outbuf)
      end
    end

    # As IO#read_nonblock: what has come (at least a byte, at most maxlen)
    # without waiting. With nothing there yet it raises IO::EAGAINWaitReadable
    # (an IO::WaitReadable), or returns :wait_readable with exception: false;
    # at the end EOFError, or nil. While another thread is in a blocking read
    # of this stream, there is nothing for this one yet.
    def read_nonblock(maxlen, outbuf = nil, exception: true)
      maxlen = Integer(maxlen)
      raise ArgumentError, "negative length #{maxlen} given" if maxlen.negative?
      return wait_readable_result(exception) unless @mutex.try_lock
      begin
        check_open
        return give("".b, outbuf) if maxlen.zero?
        return give(take([maxlen, @buf.bytesize].min), outbuf) unless @buf.empty?
        case poll(0)
        when :data then give(take([maxlen, @buf.bytesize].min), outbuf)
        when :eof then exception ? raise(EOFError, "end of file reached") : give(nil, outbuf)
        else wait_readable_result(exception)
        end
      ensure
        @mutex.unlock
      end
    end

    # As IO#wait_readable: waits up to timeout seconds (nil: for ever) until
    # something can be read without waiting, or the end has come. Returns
    # self, or nil when the time ran out.
    def wait_readable(timeout = nil)
      @mutex.synchronize do
        check_open
        return self unless @buf.empty? && !@eof
        poll_within(timeout) == :timeout ? nil : self
      end
    end

    # As IO#gets: the next line (separator sep, nil for the rest; limit in
    # bytes), nil at the end. chomp: drops the separator.
    def gets(*args, chomp: false)
      sep, limit = line_args(args)
      @mutex.synchronize do
        check_open
        line = next_line(sep, limit)
        line&.force_encoding(Encoding.default_external)
        line.chomp!(sep) if line && chomp && sep
        line
      end
    end

    def readline(*args, chomp: false)
      gets(*args, chomp: chomp) || raise(EOFError, "end of file reached")
    end

    def each_line(*args, chomp: false)
      return enum_for(:each_line, *args, chomp: chomp) unless block_given?
      while (line = gets(*args, chomp: chomp))
        yield line
      end
      self
    end
    alias each each_line

    def readlines(*args, chomp: false) = each_line(*args, chomp: chomp).to_a

    # Whether the output has ended; waits until there is a byte or the end.
    def eof?
      @mutex.synchronize do
        check_open
        @buf.empty? && !fill
      end
    end
    alias eof eof?

    # Stops reading here (the process's output is not affected).
    def close
      @closed = true
      nil
    end

    def closed?
      @closed
    end

    def inspect = "#<Spore::ProcessOutput #{@name} of #{@process.inspect}>"

    private

    def check_open
      raise IOError, "closed stream" if @closed
      @process.check_open
    end

    def give(data, outbuf)
      return data if outbuf.nil?
      data.nil? ? outbuf.clear : outbuf.replace(data)
      data && outbuf
    end

    def take(n)
      @buf.slice!(0, n)
    end

    def line_args(args)
      raise ArgumentError, "wrong number of arguments (given #{args.size}, expected 0..2)" if args.size > 2
      sep = $/
      limit = nil
      if args.size == 1 && args[0].respond_to?(:to_int)
        limit = args[0].to_int
      elsif !args.empty?
        sep = args[0]
        limit = args[1]&.to_int
      end
      sep = sep&.to_s&.b
      raise ArgumentError, "paragraph mode (an empty separator) is not supported" if sep&.empty?
      limit = nil if limit&.negative?
      [sep, limit]
    end

    # The next line from the buffer, reading more until a separator, the
    # limit or the end.
    def next_line(sep, limit)
      return "".b if limit&.zero?
      from = 0
      loop do
        if sep && (i = @buf.index(sep, from))
          n = i + sep.bytesize
          return take(limit ? [n, limit].min : n)
        end
        return take(limit) if limit && @buf.bytesize >= limit
        # Where a separator may yet start, once more has come.
        from = sep ? [@buf.bytesize - sep.bytesize + 1, 0].max : 0
        next if fill
        return @buf.empty? ? nil : take(@buf.bytesize)
      end
    end

    def wait_readable_result(exception)
      raise IO::EAGAINWaitReadable, "read would block" if exception
      :wait_readable
    end

    # One read of what comes next into the buffer, waiting up to ms:
    # :data, :eof or :timeout.
    def poll(ms)
      return :eof if @eof
      rc, data = @process.with_handle { |h| C.spore_rb_process_read(h, @fd, READ_SIZE, ms) }
      if rc.positive?
        @buf << data
        return :data
      end
      if rc.zero?
        @eof = true
        return :eof
      end
      return :timeout if rc == C::SPORE_ETIMEDOUT
      Spore.check(rc)
    end

    # poll in slices (so that close is not kept waiting) until something
    # comes, for at most timeout seconds (nil: for ever).
    def poll_within(timeout)
      remaining = timeout && (timeout * 1000).to_i
      loop do
        slice = remaining ? [[WAIT_SLICE_MS, remaining].min, 0].max : WAIT_SLICE_MS
        result = poll(slice)
        return result unless result == :timeout
        next unless remaining
        remaining -= slice
        return :timeout if remaining <= 0
      end
    end

    # Reads what comes next into the buffer; false at the end. Waits for at
    # most timeout.
    def fill
      case poll_within(@timeout)
      when :data then true
      when :eof then false
      else raise Timeout.new("#{@process.context.name}: nothing on #{@name} within #{@timeout} s", C::SPORE_ETIMEDOUT)
      end
    end
  end

end
