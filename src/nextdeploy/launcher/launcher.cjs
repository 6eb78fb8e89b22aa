'use strict';
// nextdeploy launcher: runs a Next.js `output: 'standalone'` server.js under PM2 cluster mode
// (or directly with `node launcher.cjs`) and adds what plain server.js lacks for zero-downtime reloads:
//   - readiness: the public port is only listened on (and PM2 told 'ready') once a real request through this
//     worker succeeded, so no connection is ever routed to a worker that cannot answer yet;
//   - graceful drain on SIGINT / SIGTERM / PM2's 'shutdown' message, without resetting keep-alive clients;
//   - an `x-nextdeploy-release` header on every response;
//   - the hold: a worker of a release not yet approved (manifest "hold": true and no `approved` file beside
//     it) stays off the public port, serving only its private port to the deploy that judges it. So the new
//     release's workers boot under PM2 beside the old ones while the deploy's stability window runs, and an
//     unproven release never takes traffic, not even when PM2 restarts a worker into it.
// Layout: <release>/.nextdeploy/launcher.cjs + manifest.json {"id", "server", "hold"}; server relative to
// <release>; `approved` and held/<pid> beside them (the hold).
// Dependency-free, Node >= 20. Node resolves the main module's symlinks, so __dirname is the real release
// even when PM2 starts us through <root>/current: a worker stays pinned to the release it booted from.

const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const { pipeline } = require('stream');

const BOOT_TIME = Date.now();
const RELEASE_DIR = path.resolve(__dirname, '..');

function envMs(name, fallback) {
  const value = Number.parseInt(process.env[name] || '', 10);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

// Both may be replaced by the release's own (manifest "checks": [health] paths under the build's basePath).
let READY_PATH = process.env.NEXTDEPLOY_READY_PATH || '/';
// Routes requested once after the ready path and before the public port opens ([health] smoke). A route's
// first request loads its code (tens of ms of CPU for a page), during which every connection of this
// worker waits: the stalls right after a reload (docs/bench/HISTORY.md).
let WARM_PATHS = (process.env.NEXTDEPLOY_WARM_PATHS || '').split('\n').filter((p) => p.startsWith('/'));
const READY_TIMEOUT_MS = envMs('NEXTDEPLOY_READY_TIMEOUT_MS', 30000);
// Must stay below PM2's kill_timeout, or PM2 SIGKILLs us mid-drain and every socket resets.
const DRAIN_TIMEOUT_MS = envMs('NEXTDEPLOY_DRAIN_TIMEOUT_MS', 8000);
// Exiting the instant the drain completes can drop a connection the cluster primary handed over just
// before it saw our close; staying up this long after the drain began avoids that. Longer costs each
// worker of a reload that much (PM2 replaces them one after the other); the bench: docs/bench/HISTORY.md.
const MIN_DRAIN_MS = envMs('NEXTDEPLOY_MIN_DRAIN_MS', 300);
// A socket with no request for this long during the drain is closed; a busy keep-alive client sends
// its next request well within it and gets `Connection: close` instead of an EOF.
const IDLE_CLOSE_MS = 1000;
const PROBE_ATTEMPT_TIMEOUT_MS = 5000;
const PROBE_RETRY_MS = 250;
// How often a held worker looks for its release's approval: the cut-over waits at most this long.
const HOLD_POLL_MS = 20;
const APPROVED_FILE = path.join(__dirname, 'approved');
const HELD_DIR = path.join(__dirname, 'held');
let heldFile = null; // held/<pid> while this worker waits for the approval

const realExit = process.exit.bind(process);
let releaseId = '?';
let draining = false; // set once by shutdown(); never cleared

function log(message) {
  console.log(`[nextdeploy ${releaseId} pid=${process.pid}] ${message}`);
}

function logError(message) {
  console.error(`[nextdeploy ${releaseId} pid=${process.pid}] ${message}`);
}

// Exit on a boot failure after a short pause: under PM2 cluster mode stderr goes through async
// log streams, and an immediate exit loses the very message that explains the crash.
function failBoot(message) {
  logError(message);
  process.exitCode = 1;
  setTimeout(() => realExit(1), 200);
}

// ---------------------------------------------------------------------------------------------
// Log files, rotated by size without losing a line. Under PM2 the ecosystem file names the files
// (NEXTDEPLOY_LOG_OUT / _ERR); the worker then writes its own stdout and stderr lines there, time-stamped
// as PM2's `time` option does, instead of sending them to PM2. Each complete line (or batch of lines) is
// one synchronous append (O_APPEND): the app's workers share the files and never split each other's lines.
// Rotation is rename-then-reopen between two writes: the worker that finds the file at max_size renames it
// to .1 (older ones shift up, the one past `keep` is dropped) under a lock directory; every worker sees the
// new inode within LOG_CHECK_MS and reopens, and what it wrote meanwhile went into the renamed file. So no
// line is lost (PM2's own reopen, `pm2 reloadLogs`, drops lines; copy-then-truncate loses what is written
// between the copy and the truncate), and the workers go on untouched. Without the variables (the
// preflight, `node launcher.cjs`) output goes to stdout/stderr as usual.

const LOG_CHECK_MS = 100;
const LOG_LOCK_STALE_MS = 10000; // a lock left by a worker killed mid-rotation
const LOG_MAX_PARTIAL = 64 * 1024; // a "line" longer than this without a newline is written as it is

function logTimestamp(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function openLogFile(log) {
  try {
    if (log.fd !== null) fs.closeSync(log.fd);
  } catch (err) {
    // already closed
  }
  log.fd = null;
  try {
    log.fd = fs.openSync(log.file, 'a', 0o600); // what the app prints may hold secrets
    const stat = fs.fstatSync(log.fd);
    log.dev = stat.dev;
    log.ino = stat.ino;
  } catch (err) {
    log.fd = null; // retried at the next check; lines meanwhile go to the original stream
  }
}

function appendLog(log, text) {
  const stamp = logTimestamp(new Date());
  const lines = (log.partial + text).split('\n');
  log.partial = lines.pop();
  if (log.partial.length > LOG_MAX_PARTIAL) {
    lines.push(log.partial);
    log.partial = '';
  }
  if (lines.length === 0) return;
  const data = Buffer.from(lines.map((line) => `${stamp}: ${line}\n`).join(''));
  if (log.fd === null) openLogFile(log);
  if (log.fd === null) return log.fallback(data);
  try {
    let offset = 0;
    while (offset < data.length) offset += fs.writeSync(log.fd, data, offset);
  } catch (err) {
    return log.fallback(data);
  }
  // A fast writer checks by volume too, not only every LOG_CHECK_MS: the file stays near max_size.
  log.sinceCheck += data.length;
  if (log.sinceCheck >= log.maxBytes / 8) checkLog(log);
}

// Rotates if the file reached max_size; reopens when another worker rotated it.
function checkLog(log) {
  const { maxBytes, keep } = log;
  log.sinceCheck = 0;
  let stat;
  try {
    stat = fs.statSync(log.file);
  } catch (err) {
    return openLogFile(log); // renamed by another worker and not recreated yet: create it
  }
  if (log.fd === null || stat.ino !== log.ino || stat.dev !== log.dev) return openLogFile(log);
  if (stat.size < maxBytes) return;
  const lock = `${log.file}.rotating`;
  try {
    fs.mkdirSync(lock);
  } catch (err) {
    try {
      if (Date.now() - fs.statSync(lock).mtimeMs > LOG_LOCK_STALE_MS) fs.rmdirSync(lock);
    } catch (err2) {
      // gone meanwhile
    }
    return; // another worker rotates; we reopen at a later check
  }
  try {
    if (fs.statSync(log.file).size >= maxBytes) {
      // .1 ... .(top-1) exist (rotated files are numbered without gaps): shift them up, the last past keep
      let top = 1;
      while (top < keep && fs.existsSync(`${log.file}.${top}`)) top += 1;
      for (let n = top - 1; n >= 1; n -= 1) fs.renameSync(`${log.file}.${n}`, `${log.file}.${n + 1}`);
      // Rotated files past keep (kept under an earlier, larger keep) go.
      for (let n = keep + 1; fs.existsSync(`${log.file}.${n}`); n += 1) fs.unlinkSync(`${log.file}.${n}`);
      fs.renameSync(log.file, `${log.file}.1`);
    }
  } catch (err) {
    // the file vanished under us: the next check reopens
  } finally {
    try {
      fs.rmdirSync(lock);
    } catch (err) {
      // removed as stale by another worker
    }
  }
  openLogFile(log);
}

function setupLogFiles() {
  const outFile = process.env.NEXTDEPLOY_LOG_OUT;
  const errFile = process.env.NEXTDEPLOY_LOG_ERR;
  if (!outFile || !errFile) return;
  const maxBytes = envMs('NEXTDEPLOY_LOG_MAX_BYTES', 10 * 1024 * 1024);
  const keep = envMs('NEXTDEPLOY_LOG_KEEP', 5);
  const { StringDecoder } = require('string_decoder');
  const logs = [];
  for (const [stream, file] of [[process.stdout, outFile], [process.stderr, errFile]]) {
    const originalWrite = stream.write.bind(stream);
    const log = {
      file, maxBytes, keep, fd: null, dev: 0, ino: 0, partial: '', sinceCheck: 0,
      fallback: (data) => originalWrite(data),
    };
    const decoder = new StringDecoder('utf8');
    openLogFile(log);
    stream.write = function (chunk, encoding, callback) {
      if (typeof encoding === 'function') {
        callback = encoding;
        encoding = undefined;
      }
      let text;
      if (typeof chunk === 'string') {
        const plain = !encoding || encoding === 'utf8' || encoding === 'utf-8';
        text = plain ? chunk : Buffer.from(chunk, encoding).toString('utf8');
      } else {
        text = chunk instanceof Uint8Array ? decoder.write(chunk) : String(chunk);
      }
      appendLog(log, text);
      if (typeof callback === 'function') process.nextTick(callback);
      return true;
    };
    logs.push(log);
  }
  const [outLog, errLog] = logs;
  setInterval(() => logs.forEach((log) => checkLog(log)), LOG_CHECK_MS).unref();
  // A fatal error is printed by Node itself, straight to fd 2: write it to the error log first (unless a
  // handler takes it: the process lives on, and the handler logs it as it likes).
  process.on('uncaughtExceptionMonitor', (err, origin) => {
    if (process.listenerCount('uncaughtException') > 0) return;
    appendLog(errLog, `${origin}: ${err && err.stack ? err.stack : err}\n`);
  });
  // A last line without its newline is written at exit.
  process.on('exit', () => {
    for (const log of [outLog, errLog]) if (log.partial) appendLog(log, '\n');
  });
}

setupLogFiles();

// ---------------------------------------------------------------------------------------------
// Signals. Register ours before Next's: Next's own handler calls http.Server#close() (which drops idle
// keep-alive sockets under the client's feet), waits for busy sockets forever and then exits. We hold
// every SIGINT/SIGTERM handler registered after this point and run them once our drain is done, so
// Next still flushes `after()` work via nextServer.close().

const SIGNALS = new Set(['SIGINT', 'SIGTERM']);
const heldSignalHandlers = []; // {event, fn, once}

process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));
// `pm2 stop/restart/delete` (and PM2's soft reload) send a 'shutdown' message instead of a signal.
process.on('message', (msg) => {
  if (msg === 'shutdown' || (msg && msg.type === 'shutdown')) shutdown('shutdown');
});

function holdSignalRegistration(method, once) {
  const original = process[method];
  process[method] = function (event, fn) {
    if (SIGNALS.has(event) && typeof fn === 'function') {
      heldSignalHandlers.push({ event, fn, once });
      return this;
    }
    return original.apply(this, arguments);
  };
}
holdSignalRegistration('on', false);
holdSignalRegistration('addListener', false);
holdSignalRegistration('prependListener', false);
holdSignalRegistration('once', true);
holdSignalRegistration('prependOnceListener', true);

for (const method of ['off', 'removeListener']) {
  const original = process[method];
  process[method] = function (event, fn) {
    if (SIGNALS.has(event)) {
      const index = heldSignalHandlers.findIndex((h) => h.fn === fn);
      if (index !== -1) {
        heldSignalHandlers.splice(index, 1);
        return this;
      }
    }
    return original.apply(this, arguments);
  };
}

// ---------------------------------------------------------------------------------------------
// Capture Next's http.Server. Next 16's start-server.js does `http.createServer(requestListener)` and
// then `server.listen(port, hostname)`, listening BEFORE its handlers are loaded: in cluster mode the
// primary would route connections to this worker while it still boots (a slow boot = hanging requests).
// So Next's server listens on a private loopback port instead; the public port is opened by a small
// front listener only once the worker answers (see waitReady), and its connections go into Next's server.

let server = null;
let serverListening = null; // Promise resolved on the server's 'listening' event
let front = null; // the public listener, opened when ready
let publicPort = 3000;
let publicHost = undefined;
const sockets = new Set();
const pendingResponses = new Set();

const originalListen = net.Server.prototype.listen;
http.Server.prototype.listen = function (port, hostname) {
  delete http.Server.prototype.listen; // one-shot: later servers use the normal method
  if (server !== null) return originalListen.apply(this, arguments);
  adoptServer(this);
  publicPort = port;
  publicHost = typeof hostname === 'string' ? hostname : undefined;
  // Next builds every request's URL from where it believes it listens (its address on 'listening'):
  // request.url, so NextResponse.redirect(new URL('/', request.url)) in a route handler, and
  // x-forwarded-port. It must see the public address, as under plain server.js, never this worker's private
  // port (a Location nobody can reach, which nginx's proxy_redirect cannot map back).
  this.address = () => ({ address: publicHost ?? '::', family: net.isIPv6(publicHost ?? '::') ? 'IPv6' : 'IPv4',
    port: publicPort });
  this.once('listening', () => {
    // Next has just set its own origin from the address above; a Server Action's redirect is rendered by a
    // request to it: keep that on this worker's private port (this very release, even while held).
    process.env.__NEXT_PRIVATE_ORIGIN = `http://127.0.0.1:${privatePort()}`;
  });
  // exclusive: a private port of this worker, never shared through the cluster primary.
  return originalListen.call(this, { host: '127.0.0.1', port: 0, exclusive: true });
};

// Where Next's server really listens (its own address() reports the public one).
function privatePort() {
  return net.Server.prototype.address.call(server).port;
}

function adoptServer(srv) {
  server = srv;
  serverListening = new Promise((resolve) => srv.once('listening', resolve));

  srv.on('connection', (socket) => {
    socket.nextdeployActive = 0;
    socket.nextdeployIdleSince = Date.now();
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  // Prepended so it runs before Next's (async) request listener writes anything.
  srv.prependListener('request', track);
  // A static file of a newer release is answered here, before Next (which would answer 404) sees it.
  const emit = srv.emit;
  srv.emit = function (event, req, res) {
    if (event === 'request' && serveNewerStatic(req, res)) {
      track(req, res);
      return true;
    }
    return emit.apply(this, arguments);
  };
}

function track(req, res) {
  res.setHeader('x-nextdeploy-release', releaseId);
  if (draining) res.setHeader('Connection', 'close');
  const socket = req.socket;
  socket.nextdeployActive += 1;
  pendingResponses.add(res);
  let done = false;
  const finished = () => {
    if (done) return;
    done = true;
    pendingResponses.delete(res);
    socket.nextdeployActive -= 1;
    socket.nextdeployIdleSince = Date.now();
  };
  res.once('finish', finished);
  res.once('close', finished);
}

// ---------------------------------------------------------------------------------------------
// Static files of newer releases. Next serves the `/_next/static` files its release held when it started
// (it reads the list then), so a file that appears later answers 404. On a fleet, a page from a host that
// already switched to a new release asks for its chunks from any host, one still on the old release too;
// and on one host, a page from a new worker may ask an old worker during the reload. So a request for a
// static file that this release does not have is answered from a release under the same releases/ dir
// that is newer than this one (release ids sort by creation time) and lists the file as its own
// (.nextdeploy/static-files.json). Older releases are not searched: their assets leave the skew window as
// the deploys go on (nextjs/skew.py). Release dirs are immutable once complete: what is read is cached.
// A file placed into this release's own static dir after the worker booted (Next does not know it) is
// served here too: what Next knows is what the dir held at boot, listed before server.js is loaded.

const RELEASES_DIR = path.dirname(RELEASE_DIR);
const IMMUTABLE = 'public, max-age=31536000, immutable'; // what Next sends for /_next/static
const CONTENT_TYPES = {
  '.js': 'application/javascript; charset=utf-8', '.mjs': 'application/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.map': 'application/json',
  '.txt': 'text/plain; charset=utf-8', '.html': 'text/html; charset=utf-8', '.svg': 'image/svg+xml',
  '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif',
  '.webp': 'image/webp', '.avif': 'image/avif', '.ico': 'image/x-icon', '.woff': 'font/woff',
  '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.otf': 'font/otf', '.wasm': 'application/wasm',
};
let staticPrefix = '/_next/static/'; // under the build's basePath (manifest checks.base_path)
let ownStaticDir = null;
let ownStaticAtBoot = new Set(); // static-relative names in ownStaticDir when this worker booted
const newerReleases = new Map(); // release id -> {staticDir, files: Set} (null: not a usable release)

function staticDirOf(releaseDir, manifest) {
  const appRel = typeof manifest.app_rel === 'string' ? manifest.app_rel : '';
  return path.join(releaseDir, appRel, '.next', 'static');
}

function filesUnder(dir, prefix = '', found = new Set()) {
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    return found;
  }
  for (const entry of entries) {
    const name = prefix + entry.name;
    if (entry.isDirectory()) filesUnder(path.join(dir, entry.name), `${name}/`, found);
    else found.add(name);
  }
  return found;
}

function newerRelease(id) {
  if (newerReleases.has(id)) return newerReleases.get(id);
  const dir = path.join(RELEASES_DIR, id);
  let entry = null;
  try {
    if (!fs.existsSync(path.join(dir, '.nextdeploy-unfinished'))) {
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, '.nextdeploy', 'manifest.json'), 'utf8'));
      const list = JSON.parse(fs.readFileSync(path.join(dir, '.nextdeploy', 'static-files.json'), 'utf8'));
      if (manifest.id === id && Array.isArray(list.files)) {
        entry = { staticDir: staticDirOf(dir, manifest), files: new Set(list.files.map(String)) };
      }
    }
  } catch (err) {
    entry = null; // not complete (yet): looked at again next time
  }
  if (entry !== null) newerReleases.set(id, entry);
  return entry;
}

// The file of `name` (static-relative, decoded) in the newest release newer than this one that has it.
function newerStaticFile(name) {
  let ids;
  try {
    ids = fs.readdirSync(RELEASES_DIR);
  } catch (err) {
    return null;
  }
  ids = ids.filter((id) => id > releaseId && !id.startsWith('.')).sort().reverse();
  for (const id of ids) {
    const release = newerRelease(id);
    if (release !== null && release.files.has(name)) return { id, file: path.join(release.staticDir, name) };
  }
  return null;
}

// Answers `req` if it asks for a static file Next does not know that this release's dir holds now (placed
// after boot) or a newer release has; returns whether it did.
function serveNewerStatic(req, res) {
  if ((req.method !== 'GET' && req.method !== 'HEAD') || ownStaticDir === null) return false;
  const url = req.url || '';
  const pathname = url.split('?', 1)[0];
  if (!pathname.startsWith(staticPrefix)) return false;
  let name;
  try {
    name = decodeURIComponent(pathname.slice(staticPrefix.length));
  } catch (err) {
    return false;
  }
  const parts = name.split('/');
  if (name.includes('\0') || parts.some((part) => part === '' || part === '.' || part === '..')) return false;
  if (ownStaticAtBoot.has(name)) return false; // Next serves what its dir held at boot (own and bridged files)
  const own = path.join(ownStaticDir, name);
  const found = fs.existsSync(own) ? { id: releaseId, file: own } : newerStaticFile(name);
  if (found === null) return false;
  let stat;
  try {
    stat = fs.statSync(found.file);
  } catch (err) {
    return false;
  }
  if (!stat.isFile()) return false;
  res.statusCode = 200;
  res.setHeader('Content-Type', CONTENT_TYPES[path.extname(name).toLowerCase()] || 'application/octet-stream');
  res.setHeader('Content-Length', stat.size);
  res.setHeader('Cache-Control', IMMUTABLE);
  res.setHeader('x-nextdeploy-asset-of', found.id);
  if (req.method === 'HEAD') {
    res.end();
    return true;
  }
  // pipeline: a client gone mid-file closes the file too; a read error ends the response (no hang).
  pipeline(fs.createReadStream(found.file), res, () => {});
  return true;
}

// ---------------------------------------------------------------------------------------------
// Readiness. The cluster 'listening' event fires before Next's handlers are loaded, and a probe through
// the shared port may be answered by another worker. So we probe Next's private port, which only this
// worker listens on, until the ready path answers.

// Resolves with the status once the headers came, or with `wholeBody` once the body was read too.
function probeOnce(port, probePath = READY_PATH, timeoutMs = PROBE_ATTEMPT_TIMEOUT_MS, wholeBody = false) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: probePath,
        method: 'GET',
        agent: false,
        headers: { connection: 'close', 'user-agent': 'nextdeploy-ready' },
      },
      (res) => {
        res.resume();
        if (!wholeBody) return resolve(res.statusCode);
        res.on('end', () => resolve(res.statusCode));
        res.on('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function waitReady() {
  const deadline = BOOT_TIME + READY_TIMEOUT_MS;
  const timedOut = () => Date.now() >= deadline;
  while (server === null && !timedOut()) await sleep(20);
  if (server === null) throw new Error('server.js never called listen()');
  await Promise.race([serverListening, sleep(Math.max(0, deadline - Date.now()))]);
  if (!server.listening) throw new Error('server never started listening');

  const port = privatePort();
  let last = 'no attempt';
  while (!timedOut() && !draining) {
    let now;
    try {
      const status = await probeOnce(port);
      if (status < 500) return status;
      now = `answered ${status}`;
    } catch (err) {
      now = `failed: ${err && err.message ? err.message : String(err)}`;
    }
    // Say why we are not ready yet (once per change): the preflight quotes this line on failure.
    if (now !== last) log(`not ready: GET ${READY_PATH} ${now}`);
    last = now;
    await sleep(PROBE_RETRY_MS);
  }
  if (draining) return null;
  throw new Error(`GET ${READY_PATH} did not answer < 500 within ${READY_TIMEOUT_MS} ms (last: ${last})`);
}

// Whatever the warm routes answer, the worker goes on: judging them is the preflight's job (smoke routes).
// Each page is read to its end (a streamed render goes on after the headers). All of it stays within the
// ready deadline: PM2 stops the old worker at listen_timeout whether or not this one is ready.
async function warm(port) {
  const results = [];
  const deadline = BOOT_TIME + READY_TIMEOUT_MS;
  for (const warmPath of WARM_PATHS) {
    const left = deadline - Date.now();
    if (draining) break;
    if (left <= 0) {
      results.push(`${warmPath} skipped (ready deadline)`);
      continue;
    }
    const started = Date.now();
    let outcome;
    try {
      outcome = String(await probeOnce(port, warmPath, Math.min(PROBE_ATTEMPT_TIMEOUT_MS, left), true));
    } catch (err) {
      outcome = `failed: ${err && err.message ? err.message : String(err)}`;
    }
    results.push(`${warmPath} ${outcome} in ${Date.now() - started} ms`);
  }
  return results;
}

// The public listener: in PM2 cluster mode a shared handle through the primary, which starts routing
// connections to this worker from now on. Each connection is handed to Next's server as its own.
function openFront() {
  return new Promise((resolve, reject) => {
    // noDelay as http.createServer has it: without it Nagle holds back the second write of every
    // keep-alive response until the client's delayed ACK, +40 ms per request after a connection's first.
    front = net.createServer({ noDelay: true }, (socket) => server.emit('connection', socket));
    front.once('error', reject);
    front.listen(publicPort, publicHost, () => {
      front.removeListener('error', reject);
      resolve();
    });
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Hold. The deploy finds this worker's private port in held/<pid> (to probe it through its stability
// window) and approves the release by creating the `approved` file; a rejected release is never approved
// and its workers are deleted while they wait here.

// held/<pid> is written as soon as the worker answers (the deploy's window starts at its first good answer,
// and the warm-up runs meanwhile); it stays until the public port is open (removeHeldFile): the deploy waits
// for it to go before it deletes the old workers.
function announceHeld(privatePort) {
  heldFile = path.join(HELD_DIR, String(process.pid));
  try {
    fs.mkdirSync(HELD_DIR, { recursive: true });
    fs.writeFileSync(heldFile, `${privatePort}\n`);
  } catch (err) {
    logError(`cannot write ${heldFile}: ${err.message}`); // the deploy then sees no healthy worker: rejected
  }
  log(`held off port ${publicPort} until release ${releaseId} is approved (private port ${privatePort})`);
  // PM2 may call us 'ready': no reload waits on a held worker, and PM2 7 forks a worker deleted before its
  // 'ready' again (a rejected release's held workers are deleted).
  if (typeof process.send === 'function' && process.connected) process.send('ready');
}

async function waitForApproval() {
  while (!draining && !fs.existsSync(APPROVED_FILE)) await sleep(HOLD_POLL_MS);
}

function removeHeldFile() {
  if (heldFile === null) return;
  try {
    fs.unlinkSync(heldFile);
  } catch (err) {
    // already gone (removed with a rejected release): nothing to do
  }
  heldFile = null;
}

// ---------------------------------------------------------------------------------------------
// Drain.

function shutdown(reason) {
  if (draining) return; // duplicate signals (shell Ctrl+C, PM2 message + signal)
  draining = true;
  const started = Date.now();
  log(`${reason}: draining (${sockets.size} sockets, ${pendingResponses.size} in flight)`);

  // Hard deadline, below PM2's kill_timeout. Unref'd: it must not by itself keep a finished process up.
  setTimeout(() => {
    logError(
      `drain deadline (${DRAIN_TIMEOUT_MS} ms) reached with ${sockets.size} sockets and ` +
        `${pendingResponses.size} requests left (or Next's cleanup still running): exiting 1`,
    );
    for (const socket of sockets) socket.destroy();
    realExit(1);
  }, DRAIN_TIMEOUT_MS).unref();

  if (server === null) return finish(reason, started); // still booting: nothing to drain

  // Net-level close: stop accepting, but unlike http.Server#close() leave idle keep-alive sockets alone
  // (a client may be writing its next request on one right now).
  if (front !== null && front.listening) front.close();
  const stopAccepting = () => net.Server.prototype.close.call(server, () => {});
  if (server.listening) stopAccepting();
  else server.once('listening', stopAccepting); // listen() still in flight
  // Responses not yet started end their socket; the client reconnects to a live worker.
  for (const res of pendingResponses) {
    if (!res.headersSent) res.setHeader('Connection', 'close');
  }

  const timer = setInterval(() => {
    const now = Date.now();
    for (const socket of sockets) {
      const idleFor = now - Math.max(socket.nextdeployIdleSince, started);
      if (socket.nextdeployActive === 0 && idleFor >= IDLE_CLOSE_MS) {
        // end() sends FIN after pending writes; destroy() if it is still around much later.
        if (!socket.nextdeployEnding) {
          socket.nextdeployEnding = now;
          socket.end();
        } else if (now - socket.nextdeployEnding >= IDLE_CLOSE_MS) {
          socket.destroy();
        }
      }
    }
    if (pendingResponses.size === 0 && sockets.size === 0 && now - started >= MIN_DRAIN_MS) {
      clearInterval(timer);
      finish(reason, started);
    }
  }, 50);
}

function finish(reason, started) {
  log(`drained in ${Date.now() - started} ms`);
  // A clean drain exits 0, whatever signal asked for it (Next would exit 130/143).
  process.exitCode = 0;
  if (heldSignalHandlers.length === 0) return realExit(0);
  process.exit = () => realExit(0);
  if (server !== null) {
    // Already closed at net level and drained: Next's cleanup only needs its callback.
    server.close = function (cb) {
      if (typeof cb === 'function') process.nextTick(cb);
      return this;
    };
  }
  const signal = reason === 'shutdown' ? 'SIGINT' : reason;
  const handlers = heldSignalHandlers.filter((h) => h.event === signal);
  for (const h of handlers) {
    try {
      h.fn(signal);
    } catch (err) {
      logError(`signal handler failed: ${err && err.stack ? err.stack : err}`);
    }
  }
  // If the handlers left no exit behind (nothing else pending), the process ends with exitCode 0;
  // otherwise the hard deadline above still bounds it.
}

// ---------------------------------------------------------------------------------------------
// Boot.

function main() {
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(__dirname, 'manifest.json'), 'utf8'));
  } catch (err) {
    return failBoot(`cannot read ${path.join(__dirname, 'manifest.json')}: ${err.message}`);
  }
  releaseId = String(manifest.id || '?');
  if (typeof manifest.server !== 'string' || manifest.server === '') {
    return failBoot('manifest.json has no "server" path');
  }
  const serverFile = path.resolve(RELEASE_DIR, manifest.server);
  const checks = manifest.checks;
  ownStaticDir = staticDirOf(RELEASE_DIR, manifest);
  ownStaticAtBoot = filesUnder(ownStaticDir);
  if (checks && typeof checks.base_path === 'string' && checks.base_path.startsWith('/')) {
    staticPrefix = `${checks.base_path}/_next/static/`;
  }
  if (checks && typeof checks.health === 'string' && checks.health.startsWith('/')) {
    READY_PATH = checks.health;
    if (Array.isArray(checks.smoke)) WARM_PATHS = checks.smoke.filter((p) => typeof p === 'string' && p.startsWith('/'));
  }
  // The preflight runs the release outside PM2 on a private port of its own, before any approval: no hold.
  const hold = manifest.hold === true && process.env.NEXTDEPLOY_HOLD !== '0';

  // A crash inside Next after listen (e.g. config load) makes Next print and process.exit(1) itself;
  // startServer() rejecting is caught by server.js the same way. We cover require-time throws and hangs.
  try {
    require(serverFile);
  } catch (err) {
    return failBoot(`${manifest.server} failed at startup:\n${err && err.stack ? err.stack : err}`);
  }

  waitReady()
    .then(async (status) => {
      if (status === null) return; // shut down while booting
      const held = hold && !fs.existsSync(APPROVED_FILE);
      if (held) announceHeld(privatePort());
      const warmed = await warm(privatePort());
      if (held && !draining) await waitForApproval();
      if (draining) return removeHeldFile();
      await openFront();
      removeHeldFile();
      if (draining) return front.close();
      process.env.PORT = String(publicPort); // Next set it to its private port; app code expects the public one
      const warmText = warmed.length ? `; warmed ${warmed.join(', ')}` : '';
      log(`ready in ${Date.now() - BOOT_TIME} ms (GET ${READY_PATH} -> ${status}${warmText}), serving on port ${publicPort}`);
      if (typeof process.send === 'function' && process.connected) process.send('ready');
    })
    .catch((err) => failBoot(`not ready: ${err && err.message ? err.message : err}`));
}

main();
