// SPDX-License-Identifier: MIT
// One hand-made MCP request, as an agent could send it: prints "RESULT {status, www, body}".
//   node raw.mjs URL KIND   KIND: call (tools/call send_email, id "call-7"), batch, mismatch
//   (Mcp-Name: read_inbox on a send_email body), big (a 1.1 MiB argument), list, split
//   (read_inbox, chunked, in three writes).
import https from 'node:https';

const [url, kind] = process.argv.slice(2);
const call = (name, args, id = 'call-7') =>
  ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });
const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
let body;
if (kind === 'call') body = call('send_email', { to: 'bob@example.com' });
else if (kind === 'batch') body = [call('read_inbox', {}, 1), call('send_email', { to: 'x' }, 2)];
else if (kind === 'mismatch') {
  body = call('send_email', { to: 'bob@example.com' });
  headers['mcp-method'] = 'tools/call';
  headers['mcp-name'] = 'read_inbox';
} else if (kind === 'big') body = call('read_inbox', { pad: 'x'.repeat(1100 * 1024) });
else if (kind === 'split') body = call('read_inbox', {}, 'split-1');
else body = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
const data = Buffer.from(JSON.stringify(body));
if (kind !== 'split') headers['content-length'] = data.length;
const req = https.request(url, { method: 'POST', headers }, (res) => {
  let b = '';
  res.on('data', (d) => { b += d; });
  res.on('end', () => {
    console.log('RESULT ' + JSON.stringify({ status: res.statusCode, www: res.headers['www-authenticate'] ?? null, body: b }));
  });
});
req.on('error', (e) => { console.log('RESULT ' + JSON.stringify({ error: String(e) })); });
if (kind === 'split') {
  // no Content-Length: Node frames the body chunked, one chunk per write
  req.write(data.subarray(0, 9));
  setTimeout(() => { req.write(data.subarray(9, 30)); req.end(data.subarray(30)); }, 200);
} else {
  req.end(data);
}
