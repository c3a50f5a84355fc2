/**
 * `serve` in this process from a config file, as `meshcert serve --config FILE` runs it (hot reload
 * from the file), with a gRPC client trusting the root it created under `dataDir/ca`.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { CaClient } from '../../src/client/ca-client.js';
import { loadConfigFile } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { runServer, type RunningServer } from '../../src/runtime/serve.js';

export interface ServedFile {
  readonly server: RunningServer;
  readonly client: CaClient;
  /** Everything logged so far. */
  readonly logs: () => string;
  close(): Promise<void>;
}

/** `file`'s dataDir must be `data` beside it (the root is read from `data/ca/root-cert.pem`). */
export async function serveFile(file: string): Promise<ServedFile> {
  let logs = '';
  const sink = new Writable({ write: (c, _e, cb) => ((logs += c.toString()), cb()) });
  const server = await runServer(loadConfigFile(file).config, createLogger('info', sink), { configFile: file });
  const client = new CaClient({ address: `127.0.0.1:${server.port}`, rootPem: readFileSync(join(dirname(file), 'data/ca/root-cert.pem'), 'utf8') });
  return {
    server,
    client,
    logs: () => logs,
    close: async () => {
      client.close();
      await server.close();
    },
  };
}
