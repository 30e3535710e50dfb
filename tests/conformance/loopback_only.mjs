// Preloaded with `node --import` before @modelcontextprotocol/server-everything, whose HTTP
// transport calls app.listen(PORT) and so binds every interface. Tests must only ever listen on
// loopback: a listen() given a port but no host is pinned to 127.0.0.1.
import net from "node:net";

const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const [first, second] = args;
  const portOnly = (typeof first === "number" || typeof first === "string") && typeof second !== "string";
  if (portOnly && !Number.isNaN(Number(first))) {
    return originalListen.call(this, Number(first), "127.0.0.1", ...args.slice(1));
  }
  if (first && typeof first === "object" && first.port !== undefined && first.host === undefined) {
    return originalListen.call(this, { ...first, host: "127.0.0.1" }, ...args.slice(1));
  }
  return originalListen.apply(this, args);
};
