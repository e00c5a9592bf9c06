// A DigiScope-like action loop over the dsb .NET wrapper (Dsb.Net.dll).
//
// One Client per target for the whole process (it holds the instance's
// system slot); each action thread takes a Permit before it opens a session
// on the Exchange server, polls Permit.ShouldYield between work items, closes
// the session and only then gives the permit back (Dispose). A session the
// server refuses for its limit (MAPI_E_SESSION_LIMIT) is reported with
// Client.ReportSessionLimit(permit, ...), which feeds the broker's limit
// discovery. The "session" here is a stand-in (FakeSession); put the MAPI
// logon and logoff in its place.
//
//   mono ActionLoop.exe --socket /run/dsb/dsb.sock --target exch01/svc-digiscope \
//        [--threads 8] [--seconds 10] [--max-sessions N]
// (Windows: ActionLoop.exe --socket <the broker's pipe> ...; dsb.dll beside it.)
// --max-sessions N: fail (exit 1) if more than N sessions were ever open at
// once in this process (a check for tests: the broker grants at most N).
// Ctrl-C stops the loop early: waiting threads are cancelled.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;
using Dsb;

static class ActionLoop {
  static int open_;      // sessions open now
  static int maxOpen_;   // the most ever open at once
  static long sessions_, items_, yields_, refusals_, waits_;

  static int Main(string[] args) {
    var options = new Dictionary<string, string> {
      {"--socket", null}, {"--target", null}, {"--threads", "8"}, {"--seconds", "10"},
      {"--max-sessions", "-1"}};
    for (int i = 0; i + 1 < args.Length; i += 2) {
      if (!options.ContainsKey(args[i])) return Usage("unknown option " + args[i]);
      options[args[i]] = args[i + 1];
    }
    if (args.Length % 2 != 0 || options["--socket"] == null || options["--target"] == null) {
      return Usage("--socket and --target are required");
    }
    int threads = int.Parse(options["--threads"]);
    var runFor = TimeSpan.FromSeconds(double.Parse(options["--seconds"]));
    int maxSessions = int.Parse(options["--max-sessions"]);

    // Messages of the native library (a broker restart, a re-registration).
    Log.SetHandler((level, message) => Console.Error.WriteLine("dsb " + level + ": " + message));
    using (var stop = new CancellationTokenSource())
    using (Client client = Client.Connect(options["--socket"], options["--target"], "ActionLoop example")) {
      Console.CancelKeyPress += (sender, e) => {
        e.Cancel = true;
        stop.Cancel();
      };
      stop.CancelAfter(runFor);
      var workers = new List<Thread>();
      for (int i = 0; i < threads; ++i) {
        int id = i;
        var t = new Thread(() => ActionThread(client, id, stop.Token)) {Name = "action " + i};
        workers.Add(t);
        t.Start();
      }
      foreach (Thread t in workers) t.Join();
    }
    Log.SetHandler(null);
    Console.WriteLine("done: {0} sessions, {1} work items, {2} yields, {3} refusals, {4} waits timed out, " +
                      "at most {5} sessions open at once", sessions_, items_, yields_, refusals_, waits_, maxOpen_);
    if (maxSessions >= 0 && maxOpen_ > maxSessions) {
      Console.WriteLine("FAIL: {0} sessions open at once, more than the {1} granted", maxOpen_, maxSessions);
      return 1;
    }
    return 0;
  }

  static int Usage(string why) {
    Console.Error.WriteLine("ActionLoop: " + why);
    Console.Error.WriteLine("usage: ActionLoop.exe --socket PATH --target NAME [--threads N] [--seconds S] [--max-sessions N]");
    return 2;
  }

  // One Database Action Thread: a session per batch of work items.
  static void ActionThread(Client client, int id, CancellationToken stop) {
    var random = new Random(id);
    while (!stop.IsCancellationRequested) {
      Permit permit;
      try {
        permit = client.Acquire(TimeSpan.FromSeconds(2), stop);
      } catch (OperationCanceledException) {
        return;  // shutting down
      } catch (DsbException e) when (e.Code == DsbError.Timeout) {
        Interlocked.Increment(ref waits_);  // every slot busy: wait again
        continue;
      }
      using (permit) {
        FakeSession session;
        try {
          session = FakeSession.Open();
        } catch (SessionLimitException e) {
          // The server refused for its session cap (someone outside dsb holds
          // sessions): tell the broker while still holding the permit. The
          // `using` gives the permit back; the target's release_cooldown
          // covers the server's view (for Exchange, no confirmed release).
          Interlocked.Increment(ref refusals_);
          client.ReportSessionLimit(permit, e.Message);
          continue;
        }
        using (session) {
          Interlocked.Increment(ref sessions_);
          // A batch of work items; between two, give the slot back if the
          // broker asks for it (its lease shrank, the limit was lowered).
          for (int item = 0; item < 10 && !stop.IsCancellationRequested; ++item) {
            if (permit.ShouldYield) {
              Interlocked.Increment(ref yields_);
              break;
            }
            session.Work(random);
            Interlocked.Increment(ref items_);
          }
        }  // the session is closed here, before the permit is given back
      }
    }
  }

  // MAPI_E_SESSION_LIMIT (0x80040112): "MapiExceptionSessionLimit ... ec=1246".
  sealed class SessionLimitException : Exception {
    public SessionLimitException(string message) : base(message) {}
  }

  // Stands in for an Exchange session; counts how many are open at once.
  sealed class FakeSession : IDisposable {
    public static FakeSession Open() {
      int now = Interlocked.Increment(ref open_);
      int seen;
      while (now > (seen = Volatile.Read(ref maxOpen_)) &&
             Interlocked.CompareExchange(ref maxOpen_, now, seen) != seen) {
      }
      return new FakeSession();
    }

    public void Work(Random random) {
      Thread.Sleep(random.Next(1, 10));  // a work item: reading a folder, exporting a message
    }

    public void Dispose() {
      Interlocked.Decrement(ref open_);
    }
  }
}
