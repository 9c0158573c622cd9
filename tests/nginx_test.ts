/**
 * Several servers behind a real load balancer: nginx (Debian's package) started by the test as
 * its own process on 127.0.0.1 with a generated config, proxying WebSockets to two stub servers.
 * One URL with `connections: 4` reaches both backends; when one dies, the sockets it carried
 * reconnect through nginx to the other and calls go on.
 *
 * Without nginx on the machine the test is ignored (its name says so); `.ci/run` installs it.
 */
import assert from "node:assert/strict";
import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { freePort, until, within } from "./_helpers.ts";

const NGINX = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"].find((path) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
});

/** The proxy settings that matter for WebSockets: the upgrade headers and long read timeouts. */
function nginxConfig(dir: string, port: number, backends: number[]): string {
  return `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; "" close; }
  upstream realm {
${
    backends.map((backend) => `    server 127.0.0.1:${backend} max_fails=1 fail_timeout=2s;`).join(
      "\n",
    )
  }
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://realm;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
`;
}

Deno.test({
  name: NGINX
    ? "behind nginx: one URL reaches both backends; a dead backend's sockets move to the other"
    : "behind nginx (ignored: needs nginx, e.g. apt-get install nginx)",
  ignore: NGINX === undefined,
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    const backends = [
      await startStubServer({ tokenDelayMs: 5 }),
      await startStubServer({ tokenDelayMs: 5 }),
    ];
    const dir = await Deno.makeTempDir({ prefix: "realm-nginx-" });
    const port = freePort();
    await Deno.writeTextFile(
      `${dir}/nginx.conf`,
      nginxConfig(dir, port, backends.map((b) => b.port)),
    );
    const nginx = new Deno.Command(NGINX!, {
      args: ["-e", `${dir}/error.log`, "-p", dir, "-c", `${dir}/nginx.conf`],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const client = new RealmWebSocketClient({
      url: `ws://127.0.0.1:${port}`,
      model: "llama-2-7b",
      connections: 4,
      reconnectInterval: 20,
      maxReconnectInterval: 100,
      connectTimeout: 2000,
    });
    try {
      // nginx needs a moment to listen.
      const deadline = performance.now() + 5000;
      for (;;) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch (error) {
          if (performance.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      await within(5000, client.connect(), "connect through nginx");
      assert.deepEqual(backends.map((b) => b.connectionCount), [2, 2], "round robin upstream");
      await Promise.all(
        Array.from(
          { length: 4 },
          (_, i) => client.generate({ prompt: `s${i}`, max_tokens: 5, stream: true }),
        ),
      );
      assert.ok(backends.every((b) => b.callCount >= 1), "calls reached both backends");

      await backends[0].close();
      await until(() => client.stats().openConnections === 4, 5000, "all four sockets back");
      assert.equal(backends[1].connectionCount, 4, "the other backend carries them all");
      const before = backends[1].callCount;
      const answers = await within(
        5000,
        Promise.all(Array.from({ length: 8 }, () => client.health())),
        "calls after the failover",
      );
      assert.ok(answers.every((answer) => answer.status === "healthy"));
      assert.equal(backends[1].callCount, before + 8);
      assert.equal(client.state, "open");
    } finally {
      await client.disconnect();
      nginx.kill("SIGTERM");
      const status = await nginx.status;
      await nginx.stderr.cancel();
      await backends[1].close();
      await backends[0].close();
      await Deno.remove(dir, { recursive: true });
      assert.ok(status.signal === "SIGTERM" || status.success, `nginx exited ${status.code}`);
    }
  },
});
