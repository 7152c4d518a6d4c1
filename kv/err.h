/*
 * err.h - the per-thread "last error" message behind stash_last_error().
 *
 * Every module reports a failure by returning a negative errno; where there
 * is more to say (which file, which offset, which config line) it also calls
 * err_set(), which formats a sentence into thread-local storage and returns
 * the code, so the two travel together:  return err_set(-EIO, "wal %s: ...").
 * The message belongs to the calling thread; nothing here takes a lock.
 */
#ifndef STASH_ERR_H
#define STASH_ERR_H

#include <stdarg.h>

/* Record a message for this thread and return CODE unchanged. */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message of this thread's last err_set(), or "". */
const char *err_get(void);

/* Forget this thread's message (called at the start of public calls that
 * succeed silently, so an old message is not taken for a new one). */
void err_clear(void);

#endif
