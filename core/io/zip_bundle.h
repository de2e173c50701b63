#pragma once
// Zip containers of named byte entries (the .qbproj project file), written and read with QuaZip.
//
// writeZipEntries() writes every entry (deflated, except entries the caller marks as stored,
// such as large tensor blobs) into a uniquely named temporary file beside the target, closes it,
// fsync()s it and renames it over the target, so readers see the old archive or the complete
// new one. The cancel callback is polled between entries; a cancel or any error removes the
// temporary and leaves an existing target untouched. readZipEntries() reads every entry into
// memory, checking each CRC-32. Entry names are UTF-8 paths with '/' separators.
// Threading: pure functions over their arguments; safe from any thread (one archive per call).

#include "base/result.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace qb::io {

struct ZipEntry {
    std::string name;
    std::vector<std::uint8_t> bytes;
    bool compress = true; // false: stored (method 0)
};

struct ZipWriteOptions {
    std::function<bool()> cancelled;            // polled between entries (may be empty)
    std::uint64_t failAfterBytesForTesting = 0; // > 0: fail like a full disk past this many bytes
};

Status writeZipEntries(const std::string& path, const std::vector<ZipEntry>& entries,
                       const ZipWriteOptions& options = {});

// Limits on what reading an archive may inflate. Stored entries are bounded by the file itself;
// a compressed entry must declare a size that deflate can reach from its compressed bytes
// (at most ~1032:1) and may not inflate past that declared size nor past maxInflatedEntryBytes.
struct ZipReadLimits {
    std::uint64_t maxInflatedEntryBytes = std::uint64_t(1) << 30; // 1 GiB per compressed entry
};

// Every entry of the archive, by name.
Result<std::map<std::string, std::vector<std::uint8_t>>> readZipEntries(const std::string& path,
                                                                        const ZipReadLimits& limits = {});

} // namespace qb::io
