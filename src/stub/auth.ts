/**
 * API keys and their tenants, as `auth.rs` of `realm-server` keeps them (`ApiKeyStore`): the stub's
 * counterpart of that module. The handshake that uses it lives in `websocket.ts`, as on the
 * server.
 *
 * @module
 */

/** One key's tenant and whether it is enabled (`ApiKey::enabled`). */
interface ApiKeyEntry {
  tenantId: string;
  enabled: boolean;
}

/**
 * The keys a server accepts. {@linkcode ApiKeyStore.validate} answers with the tenant or the
 * server's own failure message.
 *
 * @example
 * ```ts
 * import { ApiKeyStore } from "./auth.ts";
 *
 * const store = new ApiKeyStore();
 * store.add("sk_test", "tenant-a");
 * store.revoke("sk_test", "disabled");
 * const answer = store.validate("sk_test"); // { error: "API key is disabled" }
 * ```
 */
export class ApiKeyStore {
  readonly #keys = new Map<string, ApiKeyEntry>();

  /** How many keys are known (disabled ones included). */
  get size(): number {
    return this.#keys.size;
  }

  /** Adds a key, or re-enables it with this tenant. */
  add(key: string, tenantId: string): void {
    this.#keys.set(key, { tenantId, enabled: true });
  }

  /** `"disabled"` keeps the key but refuses it (`disable_key`); `"removed"` forgets it. */
  revoke(key: string, how: "disabled" | "removed"): void {
    if (how === "removed") this.#keys.delete(key);
    else {
      const entry = this.#keys.get(key);
      if (entry !== undefined) entry.enabled = false;
    }
  }

  /** `ApiKeyStore::validate`: the key's tenant, or the error the server reports. */
  validate(key: string): { tenantId: string } | { error: string } {
    const entry = this.#keys.get(key);
    if (entry === undefined) return { error: "Invalid API key" };
    if (!entry.enabled) return { error: "API key is disabled" };
    return { tenantId: entry.tenantId };
  }
}
