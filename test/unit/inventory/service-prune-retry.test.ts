/**
 * A prune that fails (the store down at start, a lock held too long) is tried again after
 * PRUNE_RETRY_MS (one retry pending at a time, until one succeeds), instead of waiting for the
 * next hourly round; close() cancels it, and a prune that fails after close() is not retried.
 * The store is a stand-in (the module that opens stores is mocked) so the clock can be driven.
 */
import { afterEach, beforeEach, describe, expect, it, vi, type Mock } from 'vitest';
import { createLogger } from '../../../src/log/logger.js';
import { createStore } from '../../../src/inventory/open.js';
import { InventoryService, PRUNE_RETRY_MS } from '../../../src/inventory/service.js';
import type { InventoryStore } from '../../../src/inventory/types.js';

vi.mock('../../../src/inventory/open.js', () => ({ createStore: vi.fn() }));

interface FakeStore {
  pruneExpired: Mock<(before: Date) => Promise<number>>;
  pruneAudit: Mock<(before: Date) => Promise<number>>;
}

function fakeStore(): FakeStore {
  const store = {
    migrate: vi.fn(async () => undefined),
    count: vi.fn(async () => 0),
    ping: vi.fn(async () => undefined),
    close: vi.fn(async () => undefined),
    insertMany: vi.fn(async () => undefined),
    insertAudit: vi.fn(async () => undefined),
    pruneExpired: vi.fn(async (_before: Date) => 0),
    pruneAudit: vi.fn(async (_before: Date) => 0),
  };
  vi.mocked(createStore).mockResolvedValue(store as unknown as InventoryStore);
  return store;
}

const down = (): Promise<number> => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:5432'));

async function open(auditRetention = 0): Promise<InventoryService> {
  const svc = await InventoryService.open({ store: 'sqlite', path: '/unused', failClosed: false, maxBuffer: 100, retention: 86_400, auditRetention }, createLogger('silent'));
  return svc!;
}

describe('InventoryService prune retry', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('tries a failed prune again after PRUNE_RETRY_MS, once, and then keeps the hourly round', async () => {
    const store = fakeStore();
    store.pruneExpired.mockImplementationOnce(down);
    const svc = await open();
    try {
      await vi.advanceTimersByTimeAsync(0);
      expect(store.pruneExpired).toHaveBeenCalledTimes(1);
      await vi.advanceTimersByTimeAsync(PRUNE_RETRY_MS - 1);
      expect(store.pruneExpired).toHaveBeenCalledTimes(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(store.pruneExpired).toHaveBeenCalledTimes(2);
      // That one succeeded: nothing more until the hourly round.
      await vi.advanceTimersByTimeAsync(3600_000 - PRUNE_RETRY_MS - 1);
      expect(store.pruneExpired).toHaveBeenCalledTimes(2);
      await vi.advanceTimersByTimeAsync(1);
      expect(store.pruneExpired).toHaveBeenCalledTimes(3);
      await vi.advanceTimersByTimeAsync(PRUNE_RETRY_MS);
      expect(store.pruneExpired).toHaveBeenCalledTimes(3);
    } finally {
      await svc.close();
    }
  });

  it('keeps retrying every PRUNE_RETRY_MS while the store stays down', async () => {
    const store = fakeStore();
    store.pruneExpired.mockImplementation(down);
    const svc = await open();
    try {
      await vi.advanceTimersByTimeAsync(3 * PRUNE_RETRY_MS);
      expect(store.pruneExpired).toHaveBeenCalledTimes(4);
    } finally {
      await svc.close();
    }
  });

  it('schedules one retry when both the records and the audit events fail to prune', async () => {
    const store = fakeStore();
    store.pruneExpired.mockImplementationOnce(down);
    store.pruneAudit.mockImplementationOnce(down);
    const svc = await open(86_400);
    try {
      await vi.advanceTimersByTimeAsync(PRUNE_RETRY_MS);
      expect(store.pruneExpired).toHaveBeenCalledTimes(2);
      expect(store.pruneAudit).toHaveBeenCalledTimes(2);
    } finally {
      await svc.close();
    }
  });

  it('drops a pending retry at close()', async () => {
    const store = fakeStore();
    store.pruneExpired.mockImplementationOnce(down);
    const svc = await open();
    await vi.advanceTimersByTimeAsync(0);
    await svc.close();
    await vi.advanceTimersByTimeAsync(PRUNE_RETRY_MS);
    expect(store.pruneExpired).toHaveBeenCalledTimes(1);
  });

  it('does not retry a prune that fails after close() began (one still running then)', async () => {
    const store = fakeStore();
    let failLater: (e: Error) => void = () => {};
    store.pruneExpired.mockImplementationOnce(() => new Promise<number>((_resolve, reject) => (failLater = reject)));
    const svc = await open();
    await vi.advanceTimersByTimeAsync(0);
    await svc.close();
    failLater(new Error('Connection terminated'));
    await vi.advanceTimersByTimeAsync(2 * PRUNE_RETRY_MS);
    expect(store.pruneExpired).toHaveBeenCalledTimes(1);
  });
});
