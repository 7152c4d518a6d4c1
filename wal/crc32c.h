/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every on-disk record.
 *
 * Standard parameters (reflected polynomial 0x82F63B78, initial value and
 * final xor 0xFFFFFFFF): crc32c("123456789") == 0xE3069283.  Uses the SSE4.2
 * instruction when the CPU has it, a table otherwise; both give the same
 * result.  Thread-safe: no state but constant tables.
 */
#ifndef STASH_CRC32C_H
#define STASH_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue CRC over BUF (crc32c_extend(0, ...) starts a new one). */
uint32_t crc32c_extend(uint32_t crc, const void *buf, size_t len);

static inline uint32_t crc32c(const void *buf, size_t len)
{
    return crc32c_extend(0, buf, len);
}

/* The portable implementation, exposed so tests can compare the two. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
