// The .NET wrapper (dotnet/Dsb) against a real broker, run under Mono by
// tests/dotnet/dotnet_test.cc, which starts the broker and reads the result:
//   DsbTests.exe <case> <socket> <actions>
// <actions> is the number of action slots one client can take (limit - 1 in
// single-machine mode: the client's system slot counts too). Exit code 0 and
// "PASS <case>" on success; otherwise "FAIL: ..." and exit code 1.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading;
using Dsb;

static class DsbTests {
  const string Target = "exch01";
  static string socket_;
  static int actions_;

  static int Main(string[] args) {
    if (args.Length != 3) {
      Console.Error.WriteLine("usage: DsbTests.exe <case> <socket> <actions>");
      return 2;
    }
    socket_ = args[1];
    actions_ = int.Parse(args[2]);
    try {
      switch (args[0]) {
        case "permits": Permits(); break;
        case "leak": Leak(); break;
        case "errors": Errors(); break;
        case "broker-stop": BrokerStop(); break;
        default: throw new Failure("unknown case " + args[0]);
      }
      Console.WriteLine("PASS " + args[0]);
      return 0;
    } catch (Exception e) {
      Console.WriteLine("FAIL: " + e);
      return 1;
    }
  }

  sealed class Failure : Exception {
    public Failure(string message) : base(message) {}
  }

  static void Check(bool condition, string what) {
    if (!condition) throw new Failure(what);
    Console.WriteLine("ok: " + what);
  }

  // Runs `body`, which must throw T; returns it.
  static T Throws<T>(Action body, string what) where T : Exception {
    try {
      body();
    } catch (T e) {
      Console.WriteLine("ok: " + what + " -> " + e.GetType().Name + ": " + e.Message);
      return e;
    }
    throw new Failure(what + ": no " + typeof(T).Name);
  }

  static Client Connect(TimeSpan? timeout = null) {
    return Client.Connect(socket_, Target, "dotnet-test", timeout ?? TimeSpan.FromSeconds(10));
  }

  // Takes every action slot with TryAcquire; fails unless exactly actions_ are free.
  static List<Permit> TakeAll(Client client) {
    var held = new List<Permit>();
    Permit p;
    while (held.Count <= actions_ && client.TryAcquire(out p)) held.Add(p);
    Check(held.Count == actions_, "exactly " + actions_ + " slots free (took " + held.Count + ")");
    return held;
  }

  static void Permits() {
    Check(Client.NativeVersion.Split('.').Length == 3, "native version " + Client.NativeVersion);
    using (Client client = Connect()) {
      var held = new List<Permit>();
      for (int i = 0; i < actions_; ++i) held.Add(client.Acquire(TimeSpan.FromSeconds(5)));
      Check(held.TrueForAll(p => p.IsHeld && !p.ShouldYield), actions_ + " permits, none asked back");

      // The (N+1)th waits its whole timeout, then times out.
      var watch = Stopwatch.StartNew();
      DsbException e = Throws<DsbException>(() => client.Acquire(TimeSpan.FromMilliseconds(300)),
                                            "acquire past the limit");
      Check(e.Code == DsbError.Timeout, "its code is Timeout");
      Check(watch.ElapsedMilliseconds >= 290, "it waited its timeout (" + watch.ElapsedMilliseconds + " ms)");
      Permit none;
      Check(!client.TryAcquire(out none) && none == null, "TryAcquire: none free");
      Check(!client.TryAcquire(TimeSpan.FromMilliseconds(50), out none) && none == null,
            "TryAcquire(50 ms): none free");

      // A token cancelled from another thread ends the wait.
      using (var cts = new CancellationTokenSource()) {
        cts.CancelAfter(100);
        watch.Restart();
        Throws<OperationCanceledException>(() => client.Acquire(TimeSpan.FromSeconds(60), cts.Token),
                                           "a cancelled wait");
        Check(watch.ElapsedMilliseconds < 30000, "it ended long before its timeout");
      }

      // Dispose gives the slot back, once: disposing twice frees one slot.
      Permit first = held[0];
      first.Dispose();
      first.Dispose();
      first.Release();
      Check(!first.IsHeld && !first.ShouldYield, "a disposed permit is no longer held");
      Permit again = client.Acquire(TimeSpan.FromSeconds(5));
      Check(again.IsHeld, "the disposed permit's slot was taken again");
      Check(!client.TryAcquire(out none), "and it was the only one (a second Dispose freed nothing)");
      held[0] = again;

      // A refused session: report it naming the permit, then release confirmed.
      client.ReportSessionLimit("MapiExceptionSessionLimit ec=1246 (dotnet test)");
      client.ReportSessionLimit(held[1 % actions_], "MAPI_E_SESSION_LIMIT 0x80040112 (dotnet test)");
      held[1 % actions_].ReleaseConfirmed();
      Check(client.TryAcquire(out none), "a slot released confirmed is free at once");
      held[1 % actions_] = none;

      // Client.Dispose with a permit held: the native client stays open until
      // the permit is given back (its slot, and the system slot, too).
      Permit last = held[0];
      held.RemoveAt(0);
      foreach (Permit p in held) p.Dispose();
      client.Dispose();
      client.Dispose();
      Throws<ObjectDisposedException>(() => client.Acquire(TimeSpan.Zero), "acquire after Dispose");
      Throws<ObjectDisposedException>(() => client.ReportSessionLimit(), "report after Dispose");
      Check(last.IsHeld && !last.ShouldYield, "a permit outlives its disposed client");
      last.Dispose();
    }
    // Everything came back: a new client (its system slot) takes all again.
    using (Client second = Connect()) {
      foreach (Permit p in TakeAll(second)) p.Dispose();
    }
  }

  // Takes `count` permits and drops them, on a thread of its own that ends
  // (Mono scans stacks conservatively: a dead thread's stack holds no root).
  static void LeakPermits(Client client, int count) {
    var t = new Thread(() => LeakOn(client, count));
    t.Start();
    t.Join();
  }

  [MethodImpl(MethodImplOptions.NoInlining)]
  static void LeakOn(Client client, int count) {
    for (int i = 0; i < count; ++i) client.Acquire(TimeSpan.FromSeconds(5));
  }

  // Collects until `done` holds: at most 200 rounds and 60 s.
  static bool CollectUntil(Func<bool> done) {
    var watch = Stopwatch.StartNew();
    for (int round = 0; round < 200 && watch.Elapsed < TimeSpan.FromSeconds(60); ++round) {
      GC.Collect();
      GC.WaitForPendingFinalizers();
      if (done()) return true;
      Thread.Sleep(10);  // only paces the loop; the condition is re-checked each round
    }
    return done();
  }

  static void Leak() {
    using (Client client = Connect()) {
      LeakPermits(client, actions_);
      var back = new List<Permit>();
      bool all = CollectUntil(() => {
        Permit p;
        while (back.Count < actions_ && client.TryAcquire(out p)) back.Add(p);
        return back.Count == actions_;
      });
      Check(all, "every leaked permit was given back by its finalizer (" + back.Count + "/" +
                     actions_ + ")");
      foreach (Permit p in back) p.Dispose();
    }
    // A permit leaked past its client's Dispose: its finalizer gives the slot
    // back and then closes the native client (the last reference), freeing
    // its system slot too. A second client takes every action slot only then:
    // its own system slot and actions_ slots fill the limit.
    {
      Client client = Connect();
      LeakPermits(client, 1);
      client.Dispose();
    }
    using (Client second = Connect()) {
      var taken = new List<Permit>();
      bool all = CollectUntil(() => {
        Permit p;
        while (taken.Count < actions_ && second.TryAcquire(out p)) taken.Add(p);
        return taken.Count == actions_;
      });
      Check(all, "the leaked permit's client was closed by the GC (a second client took all " +
                     actions_ + " slots; got " + taken.Count + ")");
      foreach (Permit p in taken) p.Dispose();
    }
  }

  static void Errors() {
    var e = Throws<DsbException>(() => Client.Connect(socket_, "nope", null, TimeSpan.FromSeconds(5)),
                                 "an unknown target");
    Check(e.Code == DsbError.UnknownTarget && e.Message.Contains("nope"),
          "UnknownTarget, the message names it");
    // UTF-8 both ways: the name goes out encoded and comes back in the message.
    e = Throws<DsbException>(() => Client.Connect(socket_, "exch01-Grüße-✓", null, TimeSpan.FromSeconds(5)),
                             "an unknown target with non-ASCII characters");
    Check(e.Code == DsbError.UnknownTarget && e.Message.Contains("'exch01-Grüße-✓'"),
          "the message names it, intact");
    e = Throws<DsbException>(() => Client.Connect(socket_, Target, null, TimeSpan.FromSeconds(5),
                                                  "no-such-user-dsb9"),
                             "a broker user that is no user");
    Check(e.Code == DsbError.InvalidArgument && e.Message.Contains("no-such-user-dsb9"),
          "InvalidArgument, the message names it");
    e = Throws<DsbException>(() => Client.Connect(socket_ + ".missing", Target, null,
                                                  TimeSpan.FromMilliseconds(300)),
                             "no broker at the path");
    Check(e.Code == DsbError.BrokerUnavailable, "BrokerUnavailable");
    Throws<ArgumentNullException>(() => Client.Connect(socket_, null), "a null target");
    Throws<ArgumentOutOfRangeException>(
        () => Client.Connect(socket_, Target, null, TimeSpan.FromMilliseconds(-1)), "a negative timeout");
    Throws<ArgumentException>(() => Client.Connect(socket_, "exch\0x"), "a target with a NUL");
    using (Client a = Connect())
    using (Client b = Connect()) {
      a.ReportSessionLimit("Sitzungsgrenze erreicht ✓");  // non-ASCII detail: accepted
      Throws<ArgumentOutOfRangeException>(() => a.Acquire(TimeSpan.FromMilliseconds(-5)),
                                          "acquire with a negative timeout");
      Throws<ArgumentOutOfRangeException>(() => a.Acquire(TimeSpan.FromDays(30)),
                                          "acquire with a timeout past int.MaxValue ms");
      using (Permit p = a.Acquire(TimeSpan.FromSeconds(5))) {
        Throws<ArgumentException>(() => b.ReportSessionLimit(p, "x"), "a permit of another client");
      }
    }
  }

  static void BrokerStop() {
    var lost = new ManualResetEventSlim();
    Log.SetHandler((level, message) => {
      Console.WriteLine("log " + level + ": " + message);
      if (message.Contains("lost the connection to the broker")) lost.Set();
    });
    using (Client client = Client.Connect(socket_, Target, "dotnet-test", TimeSpan.FromSeconds(1)))
    using (Permit p = client.Acquire(TimeSpan.FromSeconds(5))) {
      Console.WriteLine("READY");  // the driver stops the broker now
      Console.Out.Flush();
      Check(lost.Wait(TimeSpan.FromSeconds(60)), "the library logged the lost broker (Log.SetHandler)");
      var e = Throws<DsbException>(() => client.ReportSessionLimit("after the broker stopped"),
                                   "report with the broker stopped");
      Check(e.Code == DsbError.BrokerUnavailable, "BrokerUnavailable");
      e = Throws<DsbException>(() => Client.Connect(socket_, Target, null, TimeSpan.FromMilliseconds(300)),
                               "connect with the broker stopped");
      Check(e.Code == DsbError.BrokerUnavailable, "BrokerUnavailable");
    }
    Log.SetHandler(null);
  }
}
