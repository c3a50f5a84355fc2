import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { listenError, parseHostPort, splitHostPort } from '../../../src/net/host-port.js';

describe('splitHostPort', () => {
  it.each([
    ['0.0.0.0:15012', '0.0.0.0', 15012],
    [':9402', '0.0.0.0', 9402],
    ['[::1]:443', '::1', 443],
    ['localhost:0', 'localhost', 0],
  ])('%s', (text, host, port) => {
    expect(splitHostPort(text)).toEqual({ host, port });
  });
});

describe('parseHostPort (an address to connect to)', () => {
  it.each([
    ['example.com:443', 'example.com', 443],
    ['10.0.0.1:8443', '10.0.0.1', 8443],
    ['[::1]:443', '::1', 443],
  ])('%s', (text, host, port) => {
    expect(parseHostPort(text)).toEqual({ host, port });
  });

  it.each([
    ['no-port', /is not host:port/],
    [':443', /is not host:port/],
    ['::1:443', /use \[addr\]:port for IPv6/],
    ['h:0', /1-65535/],
    ['h:70000', /1-65535/],
  ])('refuses %s', (text, message) => {
    expect(() => parseHostPort(text)).toThrow(message);
  });
});

describe('listenError', () => {
  it.each([
    ['EADDRINUSE', 'the address is already in use'],
    ['EACCES', 'permission denied'],
    ['EADDRNOTAVAIL', 'no network interface has that address'],
  ])('%s names the setting, the address and the reason', (code, reason) => {
    const cause = Object.assign(new Error(`listen ${code}`), { code });
    const e = listenError('server.listen', '127.0.0.1:15012', cause);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message.startsWith(`cannot listen on server.listen 127.0.0.1:15012: ${reason}`)).toBe(true);
    expect(e.cause).toBe(cause);
  });

  it("keeps the system's message for other failures", () => {
    expect(listenError('admin.listen', '[::1]:9402', new Error('getaddrinfo ENOTFOUND nope')).message).toBe('cannot listen on admin.listen [::1]:9402: getaddrinfo ENOTFOUND nope');
  });
});
