/**
 * Atomic file writes: write a temp file beside the target, fsync it, rename it over the target,
 * fsync the directory. A killed process leaves either the old file or the new one, never half.
 */
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** Runs write(fd) on a temp file beside `path`, fsyncs it, renames it over `path`, fsyncs the directory. */
export function atomicWrite(path: string, write: (fd: number) => void): void {
  const temp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const fd = openSync(temp, 'w', 0o644);
  try {
    write(fd);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    try {
      unlinkSync(temp);
    } catch {}
    throw error;
  }
  closeSync(fd);
  try {
    renameSync(temp, path);
  } catch (error) {
    // e.g. the target is a directory: leave no temp file behind
    try {
      unlinkSync(temp);
    } catch {}
    throw error;
  }
  try {
    const dir = openSync(dirname(path), 'r');
    fsyncSync(dir);
    closeSync(dir);
  } catch {
    // some filesystems cannot fsync a directory; the rename is still atomic
  }
}


/** Atomically writes a string or bytes. */
export function atomicWriteFile(path: string, content: string | Uint8Array): void {
  const bytes = typeof content === 'string' ? Buffer.from(content) : content;
  atomicWrite(path, (fd) => {
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
  });
}
