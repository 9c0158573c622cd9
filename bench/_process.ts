/**
 * Servers in their own processes, for the benchmarks: started, their URL read from the first line
 * they print, stopped by closing their standard input (killed if they linger).
 *
 * @module
 */

/** A server running in a child process. */
export interface ServerProcess {
  url: string;
  stop(): Promise<void>;
}

/** Starts `command args…` and waits (at most 30 s) for the URL it prints first. */
export async function startServerProcess(
  command: string,
  args: string[],
  cwd: string,
): Promise<ServerProcess> {
  const child = new Deno.Command(command, {
    args,
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${command} ${args.join(" ")} printed no URL in 30 s`)),
      30_000,
    );
  });
  try {
    while (!text.includes("\n")) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`${command} ${args.join(" ")} exited before printing its URL`);
      text += value;
    }
  } catch (error) {
    child.kill();
    await child.status;
    throw error;
  } finally {
    clearTimeout(timer);
  }
  // Anything else it prints is drained, so that it never blocks on a full pipe.
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  const url = text.slice(0, text.indexOf("\n")).trim();
  return {
    url,
    async stop() {
      await child.stdin.close().catch(() => {});
      const killer = setTimeout(() => {
        try {
          child.kill();
        } catch { /* already gone */ }
      }, 3000);
      await child.status;
      clearTimeout(killer);
    },
  };
}
