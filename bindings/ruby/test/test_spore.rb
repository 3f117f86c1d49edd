# minitest suite of the Ruby binding (run by ctest as ruby.minitest, with
# the build's ruby/ directory on the load path and SPORE_AGENT_PATH set).
require "minitest/autorun"
require "tmpdir"
require "fileutils"
require "stringio"
require "spore"

class SporeTest < Minitest::Test
  def descendants
    me = Process.pid
    parents = {}
    Dir.children("/proc").grep(/\A\d+\z/).each do |d|
      stat = File.read("/proc/#{d}/stat") rescue next
      parents[d.to_i] = stat.rpartition(")").last.split[1].to_i
    end
    parents.keys.select do |pid|
      p = pid
      found = false
      64.times do
        p = parents[p]
        break if p.nil?
        if p == me
          found = true
          break
        end
      end
      found
    end
  end

  def assert_no_descendants
    deadline = Time.now + 5
    sleep 0.02 while !descendants.empty? && Time.now < deadline
    assert_equal [], descendants
  end

  def test_local_context_and_result_types
    Spore::Router.open do |r|
      ctx = r.local(name: "rb")
      assert_equal "rb", ctx.name
      assert ctx.alive?
      assert_equal true, ctx.call("sys.ping")
      info = ctx.call("sys.info")
      assert_kind_of Hash, info
      refute_equal Process.pid, info["pid"]
      assert_equal [1, "two", { "three" => 3.5 }, nil], ctx.call("sys.echo", value: [1, "two", { "three" => 3.5 }, nil])
      assert_equal "dir", ctx.call("fs.stat", path: "/etc")["type"]
      child = r.fork(ctx)
      assert_equal ctx.call("sys.info")["pid"], child.call("sys.info")["ppid"]
    end
    assert_no_descendants
  end

  # Python functions the target has, by name (py:), with their traceback.
  def test_python_functions_by_name
    Spore::Router.open do |r|
      ctx = r.local(python_path: "/usr/bin/env python3")
      assert_equal "a/b", ctx.call("py:posixpath:join", args: %w[a b])
      assert_equal "[1, 2.5]", ctx.call("py:json.dumps", args: [[1, 2.5]])
      err = assert_raises(Spore::RemoteError) { ctx.call("py:json:loads", args: ["{not json"]) }
      assert_equal "json.decoder.JSONDecodeError", err.remote_type
      assert_includes err.message, "Expecting property name"
      assert_includes err.remote_traceback, "Traceback"
      assert_raises(Spore::UnknownFunction) { ctx.call("py:json:no_such_function") }
    end
    assert_no_descendants
  end

  def test_binary_data
    Spore::Router.open do |r|
      ctx = r.local
      blob = (0..255).map(&:chr).join.b * 1024 + "\0tail".b
      reply = ctx.call("sys.echo", value: 1, data: blob)
      assert_kind_of Spore::Reply, reply
      assert_equal 1, reply.value
      assert_equal blob, reply.data
      assert_equal Encoding::BINARY, reply.data.encoding
    end
  end

  def test_error_classes
    Spore::Router.open do |r|
      ctx = r.local
      e = assert_raises(Spore::UnknownFunction) { ctx.call("no.such.function") }
      assert_equal Spore::UnknownFunction::CODE, e.code
      assert_equal ctx.name, e.context
      assert_equal "no.such.function", e.function
      assert_kind_of Spore::Error, e
      e = assert_raises(Spore::RemoteError) { ctx.call("fs.read", path: "/nonexistent/spore") }
      assert_equal "FileNotFoundError", e.remote_type
      assert_raises(Spore::BadArguments) { ctx.call("fs.stat") }
      assert_raises(Spore::InvalidArgument) { r.connect("no-such-method") }
      assert_raises(Spore::InvalidArgument) { r.local(no_such_option: 1) }
      assert_raises(Spore::Timeout) { ctx.call("proc.run", argv: ["sleep", "5"], timeout: 0.2) }
      assert_raises(Spore::ConnectError) { r.local(command_prefix: ["/nonexistent/launcher"]) }
      pid = ctx.call("sys.info")["pid"]
      Process.kill("KILL", pid)
      assert_raises(Spore::Disconnected) { ctx.call("proc.run", argv: ["sleep", "5"]) }
    end
    %w[ConnectError Timeout Disconnected AuthenticationFailed PasswordRequired HostKeyError Denied NotFound PermissionDenied NoSpace FileChanged Unresponsive PythonNotFound WorkerDied].each do |n|
      assert Spore.const_get(n) < Spore::Error
    end
  end

  def test_async_calls
    Spore::Router.open do |r|
      ctx = r.local
      calls = (0...200).map { |i| ctx.call_async("sys.echo", value: i) }
      assert_equal (0...200).to_a, calls.map(&:value)
      slow = ctx.call_async("proc.run", argv: ["sleep", "0.3"])
      refute slow.done?
      assert_equal 0, slow.value(10)["rc"]
      assert slow.done?
      assert_raises(Spore::UnknownFunction) { ctx.call_async("no.such").value(10) }
    end
  end

  def test_logs_arrive_in_a_logger
    io = StringIO.new
    logger = Logger.new(io)
    logger.level = Logger::DEBUG
    Spore::Router.open(logger: logger) do |r|
      ctx = r.local(name: "logs")
      ctx.call("proc.run", argv: ["sh", "-c", "echo to-stdout"], stream: true)
      deadline = Time.now + 5
      sleep 0.05 until io.string.include?("to-stdout") || Time.now > deadline
    end
    assert_match(/spore\.logs: to-stdout/, io.string)
    assert_match(/DEBUG -- spore\.logs: agent logs/, io.string)
  end

  def test_threads_overlap_without_the_gvl
    Spore::Router.open do |r|
      ctx = r.local
      t0 = Time.now
      threads = 4.times.map { Thread.new { ctx.call("proc.run", argv: ["sleep", "0.5"]) } }
      results = threads.map(&:value)
      assert results.all? { |x| x["rc"] == 0 }
      assert_operator Time.now - t0, :<, 1.5
    end
  end

  def test_objects_freed_in_any_order
    r = Spore::Router.new
    a = r.local
    b = r.fork(a)
    r.close
    assert_raises(Spore::Error) { b.call("sys.ping") }
    assert_raises(Spore::ShutDown) { r.local }
    a = b = nil
    GC.start
    r.close
    assert_no_descendants
    r = Spore::Router.new
    ctx = r.local
    r = nil
    GC.start
    assert_equal true, ctx.call("sys.ping")
    ctx.router.close
    assert_no_descendants
  end
  # Variables of the test harness (real accounts and an sshd, made by the
  # ctest fixture as root); the test skips without one.
  def harness_env
    dir = ENV["SPORE_TEST_HARNESS"].to_s
    env = {}
    ["#{dir}/env", "#{dir}/sshd/env"].each do |path|
      skip "no test harness (#{path}): run as root under ctest" if dir.empty? || !File.exist?(path)
      File.foreach(path) do |line|
        next unless line.start_with?("export ") && line.include?("=")
        k, v = line[7..].chomp.split("=", 2)
        env[k] = v.delete_prefix("'").delete_suffix("'")
      end
    end
    env
  end

  def test_transports_and_their_errors
    env = harness_env
    Spore::Router.open do |r|
      ssh = lambda do |user, **opts|
        r.ssh(env["SPORE_TEST_SSHD_HOST"], username: user, port: env["SPORE_TEST_SSHD_PORT"].to_i,
              known_hosts_file: env["SPORE_TEST_KNOWN_HOSTS"], connect_timeout: 20_000, **opts)
      end
      c = ssh.call("spore-test-sudo-nopw", identity_file: env["SPORE_TEST_KEY"])
      assert_equal "spore-test-sudo-nopw", c.call("sys.info")["user"]
      assert_equal "spore-test-target", r.sudo("spore-test-target", via: c).call("sys.info")["user"]
      assert_raises(Spore::HostKeyError) do
        ssh.call("spore-test-key", identity_file: env["SPORE_TEST_KEY"], known_hosts_file: "/dev/null")
      end
      assert_raises(Spore::AuthenticationFailed) { ssh.call("spore-test-pw", password: "not-the-password") }
      pw = ssh.call("spore-test-sudo-pw", identity_file: env["SPORE_TEST_KEY"])
      assert_raises(Spore::PasswordRequired) { r.sudo(via: pw) }
      nosudo = ssh.call("spore-test-nosudo", identity_file: env["SPORE_TEST_KEY"])
      e = assert_raises(Spore::Denied) { r.sudo(via: nosudo, password: env["SPORE_TEST_PW_NOSUDO"]) }
      assert_includes e.context, "sudo"
      refute_includes e.message, env["SPORE_TEST_PW_NOSUDO"]
    end
    assert_no_descendants
  end
  def test_files
    Dir.mktmpdir("spore-minitest-") do |dir|
      blob = Random.new(1).bytes(3 * 1024 * 1024 + 5)
      src = File.join(dir, "src")
      File.binwrite(src, blob)
      File.chmod(0o640, src)
      Spore::Router.open do |r|
        ctx = r.local
        [ctx, r.fork(ctx)].each do |c|
          c.put_file(src, File.join(dir, "dst"))
          assert_equal blob, File.binread(File.join(dir, "dst"))
          assert_equal 0o640, File.stat(File.join(dir, "dst")).mode & 0o7777
          c.get_file(File.join(dir, "dst"), File.join(dir, "back"), mode: 0o600)
          assert_equal blob, File.binread(File.join(dir, "back"))
          c.put_bytes("small\x00".b, File.join(dir, "small"), sync: false)
          assert_equal "small\x00".b, c.get_bytes(File.join(dir, "small"))
        end
        e = assert_raises(Spore::NotFound) { ctx.get_bytes("/nonexistent/spore") }
        assert_includes e.message, "/nonexistent/spore"
        assert_raises(Spore::MessageTooLarge) { ctx.get_bytes(src, max_size: 1024) }
        threads = 3.times.map { |i| Thread.new { ctx.put_file(src, File.join(dir, "t#{i}")) } }
        assert_equal true, ctx.call("sys.ping")
        threads.each(&:join)
        3.times { |i| assert_equal blob, File.binread(File.join(dir, "t#{i}")) }
        FileUtils.mkdir_p(File.join(dir, "tree", "a"))
        File.binwrite(File.join(dir, "tree", "a", "f"), "deep")
        ctx.put_tree(File.join(dir, "tree"), File.join(dir, "copy"))
        ctx.get_tree(File.join(dir, "copy"), File.join(dir, "back-tree"))
        assert_equal "deep", File.binread(File.join(dir, "back-tree", "a", "f"))
        assert_raises(Spore::NotFound) { ctx.put_tree(File.join(dir, "nothing"), File.join(dir, "x")) }
      end
    end
    assert_no_descendants
  end

  # --- process streams (Context#start)

  # Reads stream until its output holds want, at most 10 s.
  def read_until(stream, want)
    seen = +""
    stream.timeout = 10
    seen << stream.readpartial(4096) until seen.include?(want)
    seen
  ensure
    stream.timeout = nil
  end

  def pid_alive?(pid)
    stat = File.read("/proc/#{pid}/stat")
    stat.rpartition(")").last.split[0] != "Z"
  rescue Errno::ENOENT
    false
  end

  def assert_pid_gone(pid)
    deadline = Time.now + 5
    sleep 0.02 while pid_alive?(pid) && Time.now < deadline
    refute pid_alive?(pid), "process #{pid} still runs"
  end

  def test_process_cat_both_ways
    blob = Random.new(2).bytes(3 * 1024 * 1024 + 7)
    Spore::Router.open do |r|
      ctx = r.local
      [ctx, r.fork(ctx)].each do |c|
        pr = c.start(["cat"])
        assert_operator pr.pid, :>, 1
        writer = Thread.new do
          third = blob.bytesize / 3
          n = pr.stdin.write(blob.byteslice(0, third))
          pr.stdin << blob.byteslice(third, third)
          pr.stdin.print(blob.byteslice(2 * third..))
          pr.stdin.close
          n
        end
        out = pr.stdout.read
        assert_equal blob.bytesize / 3, writer.value
        assert_equal blob.bytesize, out.bytesize
        assert_equal blob, out.b
        status = pr.wait(10)
        assert status.success?
        assert_equal 0, status.exitstatus
        assert_equal pr.pid, status.pid
        # the ends, again and in every form
        assert pr.stdout.eof?
        assert_equal "", pr.stdout.read
        assert_nil pr.stdout.read(1)
        assert_nil pr.stdout.gets
        assert_raises(EOFError) { pr.stdout.readpartial(10) }
        assert_equal "", pr.stderr.read
        assert_raises(IOError) { pr.stdin.write("late") }
        assert pr.stdin.closed?
        pr.close
        assert pr.closed?
        assert_raises(Spore::InvalidArgument) { pr.stdout.read }
      end
    end
    assert_no_descendants
  end

  def test_process_read_nonblock_and_wait_readable
    Spore::Router.open do |r|
      ctx = r.local
      ctx.start(["cat"]) do |pr|
        assert_raises(IO::WaitReadable) { pr.stdout.read_nonblock(10) }
        assert_equal :wait_readable, pr.stdout.read_nonblock(10, exception: false)
        t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        assert_nil pr.stdout.wait_readable(0.2)
        assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0, :>=, 0.15
        pr.stdin.write("hello\n")
        got = +""
        while got.bytesize < 6
          refute_nil pr.stdout.wait_readable(10), "cat said nothing"
          got << pr.stdout.read_nonblock(3)
        end
        assert_equal "hello\n", got
        pr.stdin.write("x")
        refute_nil pr.stdout.wait_readable(10)
        buf = +"old"
        assert_same buf, pr.stdout.read_nonblock(100, buf)
        assert_equal "x", buf
        assert_equal "", pr.stdout.read_nonblock(0)
        assert_raises(ArgumentError) { pr.stdout.read_nonblock(-1) }
        pr.stdin.close
        assert_same pr.stdout, pr.stdout.wait_readable(10)
        assert_raises(EOFError) { pr.stdout.read_nonblock(10) }
        assert_nil pr.stdout.read_nonblock(10, exception: false)
        assert pr.wait(10).success?
      end
    end
    assert_no_descendants
  end

  def test_process_flow_control
    Spore::Router.open do |r|
      ctx = r.local
      ctx.start(["cat"], window: 65_536) do |pr|
        # Nobody reads stdout: writes stop after a few windows and pipe
        # buffers, instead of queueing everything somewhere.
        pr.stdin.timeout = 0.3
        chunk = "z" * 65_536
        sent = 0
        assert_raises(Spore::Timeout) do
          while sent < 64 * 1024 * 1024
            pr.stdin.write(chunk)
            sent += chunk.bytesize
          end
        end
        assert_operator sent, :<, 8 * 1024 * 1024
        # once it is read, it flows again
        pr.stdin.timeout = nil
        assert_equal "z" * 1000, pr.stdout.read(1000)
        assert_equal 6, pr.stdin.write("tail\n\n")
      end
    end
    assert_no_descendants
  end

  def test_process_stderr_env_cwd_and_exit_status
    Dir.mktmpdir("spore-minitest-") do |dir|
      dir = File.realpath(dir)
      Spore::Router.open do |r|
        ctx = r.local
        pr = ctx.start("echo out; echo err >&2; echo \"$FOO\"; pwd; echo \"${HOME-unset}\"; exit 3",
                       env: { FOO: "bar baz", "HOME" => nil }, cwd: dir)
        assert_equal ["out\n", "bar baz\n", "#{dir}\n", "unset\n"], pr.stdout.each_line.to_a
        assert_equal "err", pr.stderr.gets(chomp: true)
        assert_nil pr.stderr.gets
        status = pr.wait
        refute status.success?
        assert status.exited?
        refute status.signaled?
        assert_equal 3, status.exitstatus
        assert_nil status.termsig
        assert_match(/exit 3/, status.inspect)
        pr.close

        out = ctx.start(["/usr/bin/env"], env_clear: true, env: { "ONLY" => 1 }) { |p| p.stdout.read }
        assert_equal "ONLY=1\n", out
        # gets with a separator and a limit; puts and printf
        ctx.start(["cat"]) do |p|
          p.stdin.puts("a:b", ["c", "d\n"])
          p.stdin.printf("%03d", 7)
          p.stdin.close
          assert_equal "a:", p.stdout.gets(":")
          assert_equal "b\n", p.stdout.gets
          assert_equal "c", p.stdout.gets(1)
          assert_equal ["\n", "d\n", "007"], p.stdout.readlines
          assert_equal Encoding.default_external, p.stdout.read.encoding
        end

        e = assert_raises(Spore::RemoteError) { ctx.start(["/nonexistent/spore-prog"]) }
        assert_equal "FileNotFoundError", e.remote_type
        assert_raises(Spore::InvalidArgument) { ctx.start(["cat"], window: 1) }
        assert_raises(ArgumentError) { ctx.start("echo", shell: "echo") }
      end
    end
    assert_no_descendants
  end

  def test_process_signals
    Spore::Router.open do |r|
      ctx = r.local
      pr = ctx.start(%w[sleep 100])
      assert_raises(Spore::Timeout) { pr.wait(0.2) }
      assert_raises(ArgumentError) { pr.signal(:NOSUCHSIGNAL) }
      pr.signal(:TERM)
      status = pr.wait(10)
      assert status.signaled?
      refute status.exited?
      assert_nil status.success?
      assert_equal Signal.list["TERM"], status.termsig
      assert_nil status.exitstatus
      assert_match(/SIGTERM/, status.to_s)
      assert_same status, pr.wait
      assert_raises(Spore::InvalidArgument) { pr.signal("SIGTERM") } # it has ended
      assert_raises(Spore::InvalidArgument) { pr.resize(10, 10) }
      pr.close
      pr = ctx.start(%w[sleep 100])
      pr.signal("SIGKILL")
      assert_equal Signal.list["KILL"], pr.wait(10).termsig
      pr.close
    end
    assert_no_descendants
  end

  def test_process_pty_size_and_resize
    Spore::Router.open do |r|
      ctx = r.local
      pr = ctx.start(["/bin/sh"], pty: true, rows: 40, cols: 100)
      pr.stdin.puts "tty; stty size"
      seen = read_until(pr.stdout, "40 100")
      assert_includes seen, "/dev/pts/"
      pr.resize(50, 120)
      pr.stdin.puts "stty size"
      read_until(pr.stdout, "50 120")
      assert_raises(Spore::InvalidArgument) { pr.resize(0, 10) }
      pr.stdin.close # ^D: the shell exits
      assert_equal 0, pr.wait(10).exitstatus
      pr.stdout.read
      assert_equal "", pr.stderr.read # a pty carries everything on stdout
      pr.close
      ctx.start(["cat"]) { |p| assert_raises(Spore::InvalidArgument) { p.resize(30, 30) } }
    end
    assert_no_descendants
  end

  def test_process_stdin_close_is_eof
    Spore::Router.open do |r|
      ctx = r.local
      ctx.start(["wc", "-c"]) do |pr|
        zeros = "\0" * 65_536
        32.times { pr.stdin << zeros }
        pr.stdin.close
        pr.stdin.close # idempotent
        assert_equal "2097152", pr.stdout.read.strip
        assert pr.wait.success?
      end
    end
  end

  def test_process_write_after_exit_fails
    Spore::Router.open do |r|
      ctx = r.local
      pr = ctx.start(["true"])
      assert pr.wait.success?
      assert_raises(Spore::Disconnected) { pr.stdin.write("x") }
      assert_raises(Spore::Disconnected) { pr.stdin.puts("x") }
      pr.close
      # Without a wait: once the exit is known, writes fail too.
      pr = ctx.start(%w[sh -c exit])
      assert_raises(Spore::Disconnected) do
        deadline = Time.now + 10
        while Time.now < deadline
          pr.stdin.write("x")
          sleep 0.02
        end
      end
      pr.close
    end
    assert_no_descendants
  end

  def test_process_close_while_running_leaves_nothing
    Spore::Router.open do |r|
      ctx = r.local
      pr = ctx.start("sleep 100 & sleep 100; wait")
      pid = pr.pid
      assert pid_alive?(pid)
      pr.close
      assert_pid_gone(pid)
      pr.close # idempotent

      # threads inside a read and a write get out when it is closed
      pr = ctx.start(["cat"])
      reader = Thread.new { pr.stderr.read rescue $! }
      writer = Thread.new { pr.stdin.write("y" * (32 * 1024 * 1024)) rescue $! }
      sleep 0.5
      t0 = Time.now
      pr.close
      assert_operator Time.now - t0, :<, 5
      # the end of the killed process's output, or the closed handle
      assert_includes [String, Spore::InvalidArgument], reader.value.class
      writer.value # a count or an error: either way it returned
      assert_pid_gone(pr.pid)

      # the garbage collector frees (and so kills) a process nobody holds
      pid = Thread.new { ctx.start(%w[sleep 100]).pid }.value
      deadline = Time.now + 10
      while pid_alive?(pid) && Time.now < deadline
        GC.start
        sleep 0.05
      end
      refute pid_alive?(pid), "a collected process still runs"
      assert_equal true, ctx.call("sys.ping")
    end
    assert_no_descendants
  end

  def processes_with_arg(arg)
    Dir.glob("/proc/[0-9]*/cmdline").count do |f|
      File.binread(f).split("\0").include?(arg)
    rescue SystemCallError
      false
    end
  end

  # The agent is stopped, so the start waits unanswered: it gives up after
  # its timeout, and once the agent runs again the process never starts.
  def test_process_start_timeout_is_cancelled
    Spore::Router.open do |r|
      ctx = r.local
      agent = ctx.call("sys.info")["pid"]
      Process.kill(:STOP, agent)
      begin
        t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        e = assert_raises(Spore::Timeout) { ctx.start(%w[sleep 1004.25], timeout: 0.3) }
        took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
        assert_operator took, :>=, 0.25
        assert_operator took, :<, 5
        assert_includes e.message, "did not start within 300 ms"
      ensure
        Process.kill(:CONT, agent)
      end
      assert_equal true, ctx.call("sys.ping")
      20.times do
        assert_equal 0, processes_with_arg("1004.25")
        sleep 0.025
      end
      ctx.start(["true"], timeout: nil) { |pr| assert pr.wait(10).success? }
    end
    assert_no_descendants
  end


  WORKER = <<~'RUBY'
    require "spore"
    Spore::Router.attach(ARGV[0]) do |r|
      web = r.find("web")
      raise "ping" unless web.call("sys.ping") == true
      mine = r.local(name: "ruby-worker-local")
      puts "#{web.id} #{mine.id}"
    end
  RUBY

  def test_shared_router_with_worker_processes
    Dir.mktmpdir("spore-minitest-") do |dir|
      sock = File.join(dir, "run", "router.sock")
      Spore::Router.open do |listener|
        web = listener.local(name: "web")
        listener.listen(sock)
        assert_equal 0o600, File.stat(sock).mode & 0o777
        outs = 2.times.map do
          out = IO.popen([RbConfig.ruby, *$LOAD_PATH.flat_map { |p| ["-I", p] }, "-e", WORKER, sock], &:read)
          assert $?.success?, "worker failed: #{out}"
          out.split.map(&:to_i)
        end
        assert_equal [web.id, web.id], outs.map(&:first)
        assert_equal outs[0][1], outs[1][1]
        assert_equal outs[0][1], listener.find("ruby-worker-local").id
        Spore::Router.attach(sock) do |a|
          assert_equal true, a.find("web").call("sys.ping")
          assert_raises(Spore::NotFound) { a.find("nobody") }
          refute_equal outs[0][1], a.local(name: "ruby-worker-local", reuse: false).id
        end
        assert_equal true, web.call("sys.ping")
        assert_raises(Spore::ConnectError) { Spore::Router.attach(File.join(dir, "none.sock")) }
        assert_raises(Spore::InvalidArgument) { listener.listen(sock) }
      end
      refute File.exist?(sock)
    end
    assert_no_descendants
  end

end
