import { unwatchFile, watchFile } from 'node:fs';
import { join } from 'node:path';
import { CA_FILES } from '../ca/files.js';
import { loadConfigFile } from '../config/load.js';
/**
 * Hot reload of policy and issuers on SIGHUP and when the config file or a CA file changes.
 * A new config that does not validate, or whose CAs do not load, is rejected with one log line
 * and a metric; the running state stays in force. In-flight calls finish with what they began.
 */
export class Reloader {
    o;
    timer;
    running = Promise.resolve();
    watched = new Set();
    onSighup = () => this.trigger('SIGHUP');
    onFileChange = () => this.trigger('file change');
    constructor(o) {
        this.o = o;
    }
    start() {
        process.on('SIGHUP', this.onSighup);
        this.watchFiles(this.o.current());
    }
    stop() {
        process.off('SIGHUP', this.onSighup);
        if (this.timer)
            clearTimeout(this.timer);
        for (const f of this.watched)
            unwatchFile(f, this.onFileChange);
        this.watched.clear();
    }
    /** Debounced: editors and Kubernetes' atomic writer touch several files in a burst. */
    trigger(reason) {
        if (this.timer)
            clearTimeout(this.timer);
        this.timer = setTimeout(() => {
            // A failure is logged inside reload(); the chain itself must never stay rejected.
            this.running = this.running.then(() => this.reload(reason)).then(() => undefined, (err) => this.o.logger.error({ err }, 'reload failed unexpectedly'));
        }, 300);
        this.timer.unref();
    }
    async reload(reason) {
        let next;
        try {
            next = this.o.configFile ? loadConfigFile(this.o.configFile).config : this.o.current();
            await this.o.apply(next);
        }
        catch (err) {
            this.o.metrics?.reloads.inc({ result: 'rejected' });
            this.o.logger.error({ reason, err }, 'configuration reload rejected; the previous policy and CAs stay in force');
            return false;
        }
        this.o.metrics?.reloads.inc({ result: 'applied' });
        this.o.logger.info({ reason }, 'configuration reload applied');
        this.watchFiles(next);
        return true;
    }
    watchFiles(config) {
        const files = [
            ...(this.o.configFile ? [this.o.configFile] : []),
            ...[config.ca.dir, ...config.issuers.map((i) => i.dir)].flatMap((d) => [CA_FILES.cert, CA_FILES.key, CA_FILES.chain, CA_FILES.root].map((f) => join(d, f))),
        ];
        for (const f of files) {
            if (this.watched.has(f))
                continue;
            this.watched.add(f);
            watchFile(f, { interval: this.o.pollIntervalMs ?? 2000, persistent: false }, this.onFileChange);
        }
    }
}
//# sourceMappingURL=reload.js.map