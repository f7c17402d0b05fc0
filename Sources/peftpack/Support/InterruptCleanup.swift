import Foundation
import PeftPack
#if canImport(Glibc)
import Glibc
#endif

/// Ctrl-C, SIGTERM (kill, systemd, docker stop) and SIGHUP (a closed terminal) remove the
/// temporary outputs being written, then exit 128 + the signal number (130, 143, 129) as a shell
/// reports a process it interrupted.
///
/// The signals are blocked in every thread and taken by one thread waiting in sigwait, so the
/// cleanup runs as ordinary code (a signal handler could call almost nothing safely: no locks, no
/// allocation, no directory walks). Threads inherit the mask, so it is set before any thread
/// that could take the signal exists.
enum InterruptCleanup {
    static var handled: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, signal) }
        return set
    }

    static func install() {
        var blocked = handled
        pthread_sigmask(SIG_BLOCK, &blocked, nil)
        let waiter = Thread {
            var set = handled
            var received: Int32 = 0
            while sigwait(&set, &received) != 0 {}
            TemporaryOutputs.shared.removeAllForExit()
            _exit(128 + received)
        }
        waiter.name = "peftpack-signals"
        waiter.start()
    }
}
