import { watch, type FSWatcher } from 'node:fs';

/**
 * One inotify watch per folder, shared by everything that depends on it (a user's project list and a
 * project's site both watch the project's root). A listener hears every change of an entry of the
 * folder (`name`: the entry, null when the kernel does not say) and any failure of the watch (then
 * `name` is null too: whoever depends on the folder must assume it changed).
 *
 * Bounded: past `maxWatches` folders `subscribe` answers null and the caller falls back to checking
 * again after a short time, as it does when the kernel refuses a watch (ENOSPC, EMFILE).
 */
export type ChangeListener = (name: string | null) => void;

export class DirectoryWatchers {
  private readonly watched = new Map<string, { watcher: FSWatcher; listeners: Set<ChangeListener> }>();

  constructor(private readonly maxWatches: number) {}

  get size(): number {
    return this.watched.size;
  }

  /** Watches `dir` for `listener`; answers how to stop, or null when it cannot be watched. */
  subscribe(dir: string, listener: ChangeListener): (() => void) | null {
    let entry = this.watched.get(dir);
    if (!entry) {
      if (this.watched.size >= this.maxWatches) return null;
      let watcher: FSWatcher;
      try {
        watcher = watch(dir, { persistent: false });
      } catch {
        return null;
      }
      const listeners = new Set<ChangeListener>();
      const created = { watcher, listeners };
      watcher.on('change', (_event, name) => {
        for (const l of [...listeners]) l(typeof name === 'string' ? name : name ? String(name) : null);
      });
      watcher.on('error', () => {
        this.drop(dir, created);
        for (const l of [...listeners]) l(null);
      });
      entry = created;
      this.watched.set(dir, entry);
    }
    const current = entry;
    current.listeners.add(listener);
    return () => {
      current.listeners.delete(listener);
      if (current.listeners.size === 0) this.drop(dir, current);
    };
  }

  private drop(dir: string, entry: { watcher: FSWatcher }): void {
    if (this.watched.get(dir) === entry) this.watched.delete(dir);
    entry.watcher.close();
  }

  closeAll(): void {
    for (const { watcher } of this.watched.values()) watcher.close();
    this.watched.clear();
  }
}

/**
 * A map that forgets its least recently used entries beyond a budget (entries or bytes): the publishing
 * caches are bounded whatever the number of users, projects and pages visited.
 */
export class LruCache<K, V> {
  private readonly map = new Map<K, { value: V; cost: number }>();
  private total = 0;

  constructor(
    private readonly budget: number,
    private readonly costOf: (value: V) => number = () => 1,
    private readonly onEvict: (key: K, value: V) => void = () => undefined,
  ) {}

  get size(): number {
    return this.map.size;
  }

  get cost(): number {
    return this.total;
  }

  get(key: K): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    this.map.set(key, hit);
    return hit.value;
  }

  /** Stores `value`; a different value it replaces counts as evicted. */
  set(key: K, value: V): void {
    const previous = this.map.get(key);
    if (previous) {
      this.map.delete(key);
      this.total -= previous.cost;
      if (previous.value !== value) this.onEvict(key, previous.value);
    }
    const cost = this.costOf(value);
    if (cost > this.budget) return; // bigger than the whole cache: not kept
    this.map.set(key, { value, cost });
    this.total += cost;
    for (const [oldest, entry] of this.map) {
      if (this.total <= this.budget) break;
      this.map.delete(oldest);
      this.total -= entry.cost;
      this.onEvict(oldest, entry.value);
    }
  }

  delete(key: K): boolean {
    const hit = this.map.get(key);
    if (!hit) return false;
    this.map.delete(key);
    this.total -= hit.cost;
    this.onEvict(key, hit.value);
    return true;
  }

  values(): IterableIterator<V> {
    return [...this.map.values()].map((e) => e.value)[Symbol.iterator]();
  }

  clear(): void {
    for (const [key, entry] of [...this.map]) {
      this.map.delete(key);
      this.onEvict(key, entry.value);
    }
    this.total = 0;
  }
}
