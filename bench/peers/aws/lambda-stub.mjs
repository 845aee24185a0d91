// A stand-in for AWS Lambda's API, for the AWS side of the peer benchmark: it accepts every `Invoke` (202, as an
// asynchronous invocation is accepted) and answers `GetFunctionConfiguration` (Python sosw reads `Timeout` from it),
// over keep-alive HTTP/1.1 so that neither contender pays for new connections. `GET /count` returns how many
// invocations it accepted, so the benchmark can check that every task was invoked exactly once.
//
//   node lambda-stub.mjs PORT
import http from "node:http";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`usage: node lambda-stub.mjs PORT (1..65535), got \`${process.argv[2]}\``);
  process.exit(2);
}
let invocations = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const path = req.url.split("?")[0];
    const fn = /^\/2015-03-31\/functions\/([^/]+)\/(invocations|configuration)$/.exec(path);
    if (req.method === "POST" && fn && fn[2] === "invocations") {
      invocations += 1;
      res.writeHead(202, { "content-type": "application/json", "content-length": 0 });
      res.end();
    } else if (req.method === "GET" && fn && fn[2] === "configuration") {
      const name = decodeURIComponent(fn[1]);
      const body = JSON.stringify({ FunctionName: name.split(":").pop(), FunctionArn: name, Timeout: 300, MemorySize: 128 });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    } else if (req.method === "GET" && path === "/count") {
      const body = JSON.stringify({ invocations });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    } else {
      const body = JSON.stringify({ message: `the Lambda stub does not serve ${req.method} ${path}` });
      res.writeHead(404, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
