import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Holds an HTTP server to `max` open connections without locking out its probes. With Node's
 * `server.maxConnections`, a client holding `max` connections open (kept alive between scrapes,
 * or opened and left silent) made every new one be refused, the kubelet's liveness probe's too:
 * the pod was restarted for another client's connections. Here a new connection at the bound
 * takes the slot of the connection idle longest (no request under way: kept alive, or not yet
 * done sending its request), and is refused only when every connection has a request under way,
 * each of which the server's request timeout ends.
 */
export function boundConnections(server: Server, max: number): void {
  // Requests under way per open connection; Map order is the order of last activity, idle longest first.
  const open = new Map<Socket, number>();
  server.on('connection', (socket: Socket) => {
    if (open.size >= max) {
      const idle = firstIdle(open);
      if (idle === undefined) {
        socket.destroy();
        return;
      }
      open.delete(idle);
      idle.destroy();
    }
    open.set(socket, 0);
    socket.once('close', () => open.delete(socket));
  });
  server.on('request', (req, res) => {
    const socket = req.socket;
    const underWay = open.get(socket);
    if (underWay === undefined) return;
    open.set(socket, underWay + 1);
    res.once('close', () => {
      const n = open.get(socket);
      if (n === undefined) return;
      // Moved to the end: active just now.
      open.delete(socket);
      open.set(socket, n - 1);
    });
  });
}

function firstIdle(open: ReadonlyMap<Socket, number>): Socket | undefined {
  for (const [socket, underWay] of open) if (underWay === 0) return socket;
  return undefined;
}
