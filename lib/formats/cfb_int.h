/*
 * cfb_int.h - constants and helpers shared by the compound-file reader
 * (cfb.c) and writer (cfb_write.c); MS-CFB section numbers in comments.
 */
#ifndef HS_CFB_INT_H
#define HS_CFB_INT_H

#include "cfb.h"

#define CFB_HDR_LEN      512  /* 2.2: the header, whatever the sector size */
#define CFB_DIFAT_IN_HDR 109  /* FAT sector numbers held in the header */
#define CFB_DIRENT_LEN   128  /* 2.6 */
#define CFB_MINI_SECTOR  64   /* mini sector shift 6 */
#define CFB_MINI_CUTOFF  4096 /* streams below live in the mini stream */
#define CFB_MAX_SECTOR   4096 /* version 4 */
#define CFB_MAXREGSECT   0xfffffffau
#define CFB_DIFSECT      0xfffffffcu
#define CFB_FATSECT      0xfffffffdu
#define CFB_ENDOFCHAIN   0xfffffffeu
#define CFB_FREESECT     0xffffffffu
#define CFB_NOSTREAM     0xffffffffu

uint16_t hs_cfb_le16(const uint8_t *p);
uint32_t hs_cfb_le32(const uint8_t *p);
/* File offset of a sector: the header occupies sector "-1". */
uint64_t hs_cfb_sector_off(const struct hs_cfb *cfb, uint32_t sector);

#endif /* HS_CFB_INT_H */
