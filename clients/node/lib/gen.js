'use strict';
// The stubs idl/generate.sh writes into gen/js (linked here as ../gen). Node
// resolves that link to gen/js, outside this package, where the stubs'
// require('thrift') and require('node-int64') would find nothing: while they
// load, modules they ask for are resolved from this package instead.
const fs = require('fs');
const path = require('path');
const Module = require('module');

const stubs = fs.realpathSync(path.join(__dirname, '..', 'gen')) + path.sep;
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
  const fromStubs = parent && parent.filename && parent.filename.startsWith(stubs) && !request.startsWith('.');
  return resolve.call(this, request, fromStubs ? module : parent, ...rest);
};
try {
  module.exports = { Kestrel: require('../gen/Kestrel.js'), types: require('../gen/kestrel_types.js') };
} finally {
  Module._resolveFilename = resolve;
}
