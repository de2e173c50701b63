#pragma once
// Helpers shared by the exports that produce a Hugging Face model directory (GPTQ checkpoint,
// fake-quantized safetensors): a staging directory beside the target that is swapped in only
// after the content is complete and verified, small-file writes, tokenizer-file copies and the
// source's config.json.
//
// StagingDirectory::create() checks free space for the announced size and makes a unique
// directory "<parent>/.tmp-<name>-XXXXXX" (same file system as the target). install() replaces
// the target: an existing target directory is exchanged atomically (renameat2 RENAME_EXCHANGE,
// falling back to rename-aside) and then removed; before install() nothing of the target is
// touched. The destructor removes an uninstalled staging directory (error or cancel).
// Threading: one object per export, calling thread only. POSIX + std::filesystem.

#include "base/result.h"
#include "io/checkpoint.h"
#include "io/json_value.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qb::exporting {

class StagingDirectory {
public:
    StagingDirectory() = default;
    StagingDirectory(StagingDirectory&& o) noexcept;
    StagingDirectory& operator=(StagingDirectory&& o) noexcept;
    StagingDirectory(const StagingDirectory&) = delete;
    StagingDirectory& operator=(const StagingDirectory&) = delete;
    ~StagingDirectory();

    static Result<StagingDirectory> create(const std::string& target, std::uint64_t expectedBytes);
    const std::string& path() const { return m_path; }
    std::string file(const std::string& name) const { return m_path + "/" + name; }
    Status install();
    void discard();

private:
    std::string m_target;
    std::string m_path;
};

// The directory that holds the checkpoint's files (its path, or the parent of a file path).
std::string checkpointDirectory(const io::Checkpoint& checkpoint);
// Writes a small file atomically (fsync'd).
Status writeSmallFile(const std::string& path, const std::string& bytes);
Result<std::string> readSmallFile(const std::string& path);
// Copies the tokenizer and generation files that exist in srcDir (tokenizer.json,
// tokenizer_config.json, special_tokens_map.json, tokenizer.model, vocab.json, merges.txt,
// added_tokens.json, generation_config.json). Returns the names copied.
Result<std::vector<std::string>> copyTokenizerFiles(const std::string& srcDir, const std::string& dstDir);
// config.json of the source directory, or one synthesized from the parsed ModelConfig.
Result<io::JsonValue> sourceConfigJson(const io::Checkpoint& checkpoint);

} // namespace qb::exporting
