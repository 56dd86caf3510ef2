/* crc32c.h - CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reflected as
 * 0x82F63B78), the integrity checksum Google Cloud KMS puts on digests,
 * signatures and public keys. zlib's crc32 is the other polynomial. */
#ifndef HS_CRC32C_H
#define HS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of data; chain calls by passing the previous result as crc
 * (start with 0). */
uint32_t hs_crc32c(uint32_t crc, const void *data, size_t len);

#endif /* HS_CRC32C_H */
