/*
 * value.h - how user keys and values are stored inside the tree: the key
 * namespaces and the value envelope (docs/format.md, "Keys and values").
 *
 * Keys.  A user key is stored as it is, except that one starting with byte
 * 0xFF gets a 0x00 inserted after that byte.  Stored keys starting with 0xFF
 * followed by anything but 0x00 are the engine's own and never reach users:
 *   0xFF 0x02 | gen (u64 BE) | index (u64 BE)   one chunk of a large value
 *   0xFF 0x03 | gen (u64 BE)                    a large value's owner key
 *   0xFF 0x04 | name                            a named snapshot: its sequence
 *                                               (u64 LE) and creation time (varint ns)
 *   0xFF 0x05 | gen (u64 BE)                    a streamed put not yet committed
 *   0xFF 0x06 | id (u64 BE)                     a value with hard links (several
 *                                               names): varint nlink | envelope
 *   0xFF 0x07 | id (u64 BE) | stored name       one name of value id (empty)
 *   0xFF 0x08 | gen (u64 BE) | index (u64 BE)   one chunk of a large value whose
 *                                               chunk records are tagged (below)
 *   0xFF 0x09 | gen (u64 BE) | index (u64 BE)   small writes over that chunk,
 *                                               applied on top of its bytes (below)
 * The escape keeps user keys in bytewise order and puts every engine key
 * after all of them, so an iterator stops at the first one.
 *
 * Values.  Every stored value of a user key starts with a kind byte:
 *   0 plain    varint write time (seconds) | the value
 *   1 attr     varint n | attribute record (n bytes) | the value
 *   2 chunked  varint n | attribute record (n bytes) | varint size | gen (u64 LE)
 *              [| varint chunks: how many chunk records it has, so what its
 *              holes spare is known without reading them (written since
 *              kept; a value without it counts as having no holes)]
 *   3 link     id (u64 LE): the value is the one under 0xFF 0x06 | id, whose
 *              envelope is an attr or chunked one led by its name count
 *   4 chunked, as 2, with tagged chunk records
 * A chunked value's bytes live in chunks of CHUNK_SIZE under (gen, index); a
 * missing chunk reads as zeros.  Kind 2's chunks (0xFF 0x02) are the bytes
 * themselves; kind 4's (0xFF 0x08) start with a tag: 0 and the bytes, or 1
 * (2: compressed) and a pointer into a value file (vlog.h).  A tagged chunk
 * may have a patch record (0xFF 0x09, same gen and index): entries
 *   u32 LE offset in the chunk | u32 LE length | the bytes
 * applied in order over the chunk's bytes (a chunk grows to the end of the
 * last byte written; bytes between read as zeros).  Writing or deleting a
 * chunk record deletes its patch record in the same batch.  The attribute record is
 *   varint mode | varint uid | varint gid | varint atime_ns | varint mtime_ns
 *   | varint ctime_ns | the rest: extended attributes, each
 *     varint name length | name | varint value length | value
 *   of which the first may be the inode number: 0x00 0x08 | ino (u64 LE)
 *   (an empty name, which no extended attribute has)
 * Times are nanoseconds since 1970 (times before it are stored as 0).
 *
 * Pure functions, no state: safe from any thread.
 */
#ifndef STASH_VALUE_H
#define STASH_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "smartstash.h"

#define NS_BYTE   0xFF
#define NS_ESC    0x00
#define NS_CHUNK  0x02
#define NS_BLOB   0x03
#define NS_SNAP   0x04
#define NS_STREAM 0x05          /* a streamed put not yet committed */
#define NS_LINK   0x06          /* a value with hard links */
#define NS_LREF   0x07          /* one name of such a value */
#define NS_TCHUNK 0x08          /* a tagged chunk */
#define NS_PATCH  0x09          /* small writes over a tagged chunk */

#define VK_PLAIN   0
#define VK_ATTR    1
#define VK_CHUNKED 2
#define VK_LINK    3
#define VK_TCHUNKED 4           /* stored only: decoded as VK_CHUNKED, tagged */

#define CTAG_BYTES 0            /* tagged chunk: the bytes follow */
#define CTAG_VPTR  1            /* tagged chunk: a value-file pointer follows */
#define CTAG_VPTRZ 2            /* the same, to bytes stored compressed */

#define CHUNK_SIZE  65536u
#define PATCH_MAX   (CHUNK_SIZE / 4)    /* bytes of a patch record, at most */
#define PATCH_HDR   8                   /* offset and length of one entry */
#define INLINE_MAX  65536u       /* larger values are chunked */
#define CHUNK_KEY_LEN 18
#define BLOB_KEY_LEN 10
#define LINK_KEY_LEN 10
#define LINK_MAX   65000u        /* names of one value */
#define MAX_XATTR_BYTES 65536u   /* all extended attributes of one key */

/* A stored key: at most STASH_MAX_KEY + 1 bytes. */
#define IKEY_MAX (STASH_MAX_KEY + 1)

/* Store user key K into OUT (room for klen + 1); returns the stored length. */
size_t key_escape(const void *k, size_t klen, uint8_t *out);

/* Copy the user key of stored key K into OUT (room for klen); -1 when K is
 * one of the engine's own keys. */
int key_unescape(const uint8_t *k, size_t klen, uint8_t *out, size_t *ulen);

/* Whether stored key K is one of the engine's own. */
static inline int key_is_sys(const uint8_t *k, size_t klen)
{
    return klen >= 1 && k[0] == NS_BYTE && (klen < 2 || k[1] != NS_ESC);
}

/*
 * A user key in its stored form: the caller's bytes themselves (no copy)
 * unless the key starts with 0xFF, then an escaped copy.  skey_done frees
 * the copy.  skey_make: 0 or -ENOMEM.
 */
struct skey {
    const uint8_t *p;
    size_t len;
    uint8_t *heap;
};
int skey_make(struct skey *s, const void *key, size_t klen);
void skey_done(struct skey *s);

struct envelope;
void chunk_key(uint8_t out[CHUNK_KEY_LEN], uint64_t gen, uint64_t index);
void tchunk_key(uint8_t out[CHUNK_KEY_LEN], uint64_t gen, uint64_t index);
/* Chunk INDEX of chunked value E, in the namespace its kind uses. */
void ckey(uint8_t out[CHUNK_KEY_LEN], const struct envelope *e, uint64_t index);
/* The patch record of that chunk (tagged values only). */
void pkey(uint8_t out[CHUNK_KEY_LEN], const struct envelope *e, uint64_t index);
/* Apply patch record P (PLEN bytes) to the CHUNK_SIZE bytes of C, of which
 * the first *N are the chunk's (the rest zeros); *N grows to the end of the
 * last byte written.  0, or -EIO for a damaged record (C then undefined). */
int patch_apply(const uint8_t *p, size_t plen, uint8_t *c, size_t *n);
/* Append to OUT (room for PATCH_HDR + LEN) the entry writing LEN bytes of
 * SRC at offset OFF; returns its length. */
size_t patch_entry(uint8_t *out, size_t off, const uint8_t *src, size_t len);
void blob_key(uint8_t out[BLOB_KEY_LEN], uint64_t gen);
/* The record of a streamed put in progress into generation GEN. */
void stream_key(uint8_t out[BLOB_KEY_LEN], uint64_t gen);
/* The shared entry of hard-linked value ID. */
void link_key(uint8_t out[LINK_KEY_LEN], uint64_t id);
/* The back reference from value ID to its name IK (OUT has room for
 * LINK_KEY_LEN + iklen); returns the length. */
size_t lref_key(uint8_t *out, uint64_t id, const uint8_t *ik, size_t iklen);

/*
 * A decoded envelope; pointers point into the stored value.  A link (kind
 * VK_LINK) has only LINK set.  The envelope of a shared entry (link_decode)
 * is an attr or chunked one with LINK and NLINK set, and st.nlink and
 * st.link_id with them; env_encode_header then writes the name count too.
 */
struct envelope {
    int kind;
    stash_stat_t st;            /* mode 0 for a plain value */
    const uint8_t *xattr;       /* extended attributes (attr and chunked) */
    size_t xlen;
    const uint8_t *data;        /* inline value (plain and attr) */
    uint64_t gen;               /* chunked */
    int tagged;                 /* chunked: its chunk records are tagged (kind 4) */
    int chunks_known;           /* chunked: CHUNKS is kept (values made since it is) */
    uint64_t chunks;            /* chunked: how many chunk records it has */
    uint64_t link;              /* the shared entry's id, 0 = none */
    uint32_t nlink;             /* a shared entry's names */
};

/* Decode a key's stored value; -EIO when it is not a well-formed envelope. */
int env_decode(const uint8_t *v, size_t n, struct envelope *e);

/* Decode shared entry ID's stored value; -EIO when it is damaged. */
int link_decode(const uint8_t *v, size_t n, uint64_t id, struct envelope *e);

/* Bytes needed to encode an envelope header for E with an inline value. */
size_t env_header_max(size_t xlen);

/*
 * Encode E's header into OUT (room for env_header_max) and return its
 * length.  For plain and attr kinds the value bytes follow the header; for
 * chunked the header is the whole value.
 */
size_t env_encode_header(const struct envelope *e, uint8_t *out);

/* Now, in nanoseconds since 1970. */
int64_t now_ns(void);

/* A fresh random 64-bit generation number for a chunked value. */
uint64_t new_gen(void);

#endif
