'use strict';
// Measurement only, for the bench's baseline strategies (plain server.js under PM2): tag every response
// with the release that answered, as nextdeploy's launcher does, so the bench can tell releases apart.
// Loaded with `node --require`; it changes nothing else (no readiness, no drain, no signal handling).
const http = require('http');
const path = require('path');

const originalEmit = http.Server.prototype.emit;
let release = null;

http.Server.prototype.emit = function (event, req, res) {
  if (event === 'request' && res && typeof res.setHeader === 'function' && !res.headersSent) {
    // server.js chdir()s into its own (symlink-resolved) directory: the release dir.
    if (release === null) release = path.basename(process.cwd());
    res.setHeader('x-nextdeploy-release', release);
  }
  return originalEmit.apply(this, arguments);
};
