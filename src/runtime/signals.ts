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
