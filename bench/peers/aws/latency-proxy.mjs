// A TCP proxy that adds network latency: every chunk is passed on `rtt / 2` milliseconds after it arrives, in each
// direction, in order — what a request to AWS pays on the way there and back, and a server on loopback does not.
//
//     node latency-proxy.mjs LISTEN_PORT TARGET_PORT RTT_MS
import net from "node:net";

const [listen, target, rtt] = process.argv.slice(2).map(Number);
if (![listen, target, rtt].every((n) => Number.isFinite(n) && n >= 0)) {
  console.error("usage: node latency-proxy.mjs LISTEN_PORT TARGET_PORT RTT_MS");
  process.exit(2);
}
const half = rtt / 2;

net
  .createServer((client) => {
    const server = net.connect(target, "127.0.0.1");
    // No Nagle: a delayed small write must not wait for the ACK of the one before (40 ms on Linux), which would add
    // the proxy's own stall to every request, not the latency it stands for.
    client.setNoDelay(true);
    server.setNoDelay(true);
    const pipe = (from, to) => {
      from.on("data", (chunk) => setTimeout(() => to.writable && to.write(chunk), half));
      from.on("end", () => setTimeout(() => to.end(), half));
    };
    pipe(client, server);
    pipe(server, client);
    const close = () => {
      client.destroy();
      server.destroy();
    };
    client.on("error", close);
    server.on("error", close);
  })
  .listen(listen, "127.0.0.1", () => console.log(`latency proxy ${listen} -> ${target}, ${rtt} ms round trip`));
