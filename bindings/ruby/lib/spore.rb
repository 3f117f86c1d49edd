# spore for Ruby: open contexts, run calls in them, receive their logs.
#
#   require "spore"
#   Spore::Router.open do |r|
#     ctx = r.local
#     puts ctx.call("sys.info")["hostname"]
#     fork = r.fork(ctx)
#     p fork.call("fs.stat", path: "/etc")
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
  # applies remote_type, context and function.
  class Error < StandardError
    attr_reader :code, :remote_type, :context, :function

    def initialize(message, code = nil, remote_type = nil, context = nil, function = nil)
      super(message)
      @code = code || self.class.const_get(:CODE)
      @remote_type = remote_type
      @context = context
      @function = function
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
    "ECHANGED" => "FileChanged"
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
              empty.(e.function))
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
    def initialize(logger: nil, **opts)
      @logger = logger
      opts[:log_level] ||= logger ? (C_LEVEL[logger.level] || C::SPORE_LOG_ERROR) : C::SPORE_LOG_WARNING
      o = Spore.options(opts)
      begin
        rc, handle = C.spore_router_new(o)
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
      pending = start(function, data, args)
      begin
        Spore.wait(pending, timeout)
      ensure
        C.spore_call_free(pending)
      end
    end

    # Starts a call; returns a Spore::Call to wait on.
    def call_async(function, data: nil, **args)
      Call.new(start(function, data, args))
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

    def start(function, data, args)
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
end
