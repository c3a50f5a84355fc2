import type { Server } from 'node:http';
import type { Socket } from 'node:net';

export interface ConnectionBounds {
  /** Open connections in all. */
  readonly max: number;
  /** Open connections from one remote address, so that one client cannot hold every slot. */
  readonly perAddress: number;
}

interface Held {
  readonly address: string;
  /** Requests under way on the connection. */
  underWay: number;
}

/**
 * Holds an HTTP server to a number of open connections without locking out its probes. With
 * Node's `server.maxConnections`, a client holding them all (kept alive between scrapes, or opened
 * and left silent) made every new connection be refused, the kubelet's liveness probe's too: the pod
 * was restarted for another client's connections. Here a new connection at a bound takes the slot
 * of the connection idle longest (no request under way: kept alive, or not yet done sending its
 * request), from its own address when that address is at `perAddress`; it is refused only when
 * every connection it could take has a request under way. One address then holds at most
 * `perAddress` of them, so a single client, however it reads, cannot leave the probes no slot.
 */
export function boundConnections(server: Server, bounds: ConnectionBounds): void {
  // Map order is the order of last activity: idle longest first.
  const open = new Map<Socket, Held>();
  const countFrom = (address: string): number => {
    let n = 0;
    for (const held of open.values()) if (held.address === address) n++;
    return n;
  };
  /** Makes room for one more connection from `address`; false when every candidate is busy. */
  const makeRoom = (address: string): boolean => {
    const own = countFrom(address) >= bounds.perAddress;
    if (!own && open.size < bounds.max) return true;
    for (const [socket, held] of open) {
      if (held.underWay === 0 && (!own || held.address === address)) {
        open.delete(socket);
        socket.destroy();
        return true;
      }
    }
    return false;
  };
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    if (!makeRoom(address)) {
      socket.destroy();
      return;
    }
    open.set(socket, { address, underWay: 0 });
    socket.once('close', () => open.delete(socket));
  });
  server.on('request', (req, res) => {
    const socket = req.socket;
    const held = open.get(socket);
    if (!held) return;
    held.underWay++;
    res.once('close', () => {
      if (open.get(socket) !== held) return;
      held.underWay--;
      // Moved to the end: active just now.
      open.delete(socket);
      open.set(socket, held);
    });
  });
}
