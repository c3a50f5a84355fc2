import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { openStore } from '../../src/inventory/open.js';
import { makeRecord } from '../unit/inventory/fixtures.js';

/**
 * A SQLite inventory that opens (its first two pages, the schema, are intact) but whose rows cannot
 * be read: every page after them overwritten, so a query fails with "database disk image is malformed".
 */
export async function writeUnreadableInventory(path: string): Promise<void> {
  const store = await openStore({ kind: 'sqlite', path });
  await store.insertMany(Array.from({ length: 400 }, (_, i) => makeRecord(`c${i}`)));
  await store.close();
  const kept = 2 * 4096;
  const size = statSync(path).size;
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Buffer.alloc(size - kept, 0xff), 0, size - kept, kept);
  } finally {
    closeSync(fd);
  }
}
