/**
 * What a browser tells about the network and the page: `offline`/`online`,
 * and a page coming back from the background or from sleep. Nothing here
 * runs outside browsers.
 *
 * @module
 */

/** What the client does when the browser speaks. */
export interface BrowserHooks {
  /** The browser lost the network: the sockets are gone. */
  offline(): void;
  /** The network is back: reconnect now. */
  online(): void;
  /** The page is visible again (timers were throttled): check the sockets now. */
  wake(): void;
}

interface BrowserGlobals {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
  document?: {
    visibilityState?: string;
    addEventListener(type: string, listener: () => void): void;
    removeEventListener(type: string, listener: () => void): void;
  };
}

/**
 * Listens to the browser's network and page events; returns the function
 * that removes the listeners. Outside a browser (no `window` with a
 * `document`) it does nothing.
 */
export function watchBrowser(hooks: BrowserHooks): () => void {
  const window = (globalThis as { window?: BrowserGlobals }).window;
  const document = window?.document;
  if (
    window === undefined || document === undefined ||
    typeof window.addEventListener !== "function" ||
    typeof document.addEventListener !== "function"
  ) {
    return () => {};
  }
  const offline = () => hooks.offline();
  const online = () => hooks.online();
  const wake = () => hooks.wake();
  const visibility = () => {
    if (document.visibilityState === "visible") hooks.wake();
  };
  window.addEventListener("offline", offline);
  window.addEventListener("online", online);
  window.addEventListener("pageshow", wake);
  document.addEventListener("visibilitychange", visibility);
  return () => {
    window.removeEventListener("offline", offline);
    window.removeEventListener("online", online);
    window.removeEventListener("pageshow", wake);
    document.removeEventListener("visibilitychange", visibility);
  };
}
