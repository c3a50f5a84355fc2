/**
 * Replaces one signal handler with another without a moment with none. Node stops watching a
 * signal when its last listener goes, and a signal caught but not yet dispatched is then lost:
 * removed first, a SIGTERM arriving as `serve` finishes starting would never be seen, and the pod
 * would serve on until it is killed.
 */
export function handOverSignal(signal: NodeJS.Signals, from: (signal: NodeJS.Signals) => void, to: (signal: NodeJS.Signals) => void): void {
  process.on(signal, to);
  process.off(signal, from);
}

/** Stop signals caught before `serve` could handle them (see catchStopSignals), in order. */
const caughtEarly: NodeJS.Signals[] = [];
const catchEarly = (signal: NodeJS.Signals): void => void caughtEarly.push(signal);

/**
 * Catches SIGTERM and SIGINT from the first moment of a process that serves, before its modules
 * load and its config is read: as PID 1 in a container a signal without a handler is dropped, and
 * the pod would serve on until it is killed. takeOverStopSignal then hands each to its handler.
 */
export function catchStopSignals(): void {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, catchEarly);
}

/** `to` handles `signal` from now on, and is called at once for each one caught before. */
export function takeOverStopSignal(signal: 'SIGTERM' | 'SIGINT', to: (signal: NodeJS.Signals) => void): void {
  handOverSignal(signal, catchEarly, to);
  for (let i = 0; i < caughtEarly.length; ) {
    if (caughtEarly[i] === signal) {
      caughtEarly.splice(i, 1);
      to(signal);
    } else i++;
  }
}
