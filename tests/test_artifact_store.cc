// The artifact store and stage keys: keys are stable and sensitive to every input, artifacts are
// filed whole, verified on reuse, set aside when corrupt, and computed once under the lock.
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "protoquant/artifact_store.h"
#include "protoquant/digest.h"
#include "protoquant/stage_key.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

TEST(Digest, Sha256MatchesKnownVectors) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  testing::TempDir dir;
  std::string million(1000000, 'a');
  testing::write_text(dir / "a.txt", million);  // longer than the 1 MiB read buffer's first pass
  EXPECT_EQ(*sha256_file(dir / "a.txt"), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_FALSE(sha256_file(dir / "absent").ok());
}

TEST(StageKey, StableAcrossKeyOrderAndSensitiveToEveryValue) {
  const nlohmann::json inputs = {{"quantizer", {{"type", "vq"}, {"codes", 256}, {"beta", 0.25}}}, {"seed", 0}};
  nlohmann::json reordered;
  reordered["seed"] = 0;
  reordered["quantizer"]["beta"] = 0.25;
  reordered["quantizer"]["codes"] = 256;
  reordered["quantizer"]["type"] = "vq";
  const StageKey a = make_stage_key("codebook", inputs);
  EXPECT_EQ(a.key.size(), 64u);
  EXPECT_EQ(a.key, make_stage_key("codebook", reordered).key);
  // The key is the SHA-256 of the canonical text, computable by anyone from the filed inputs.
  EXPECT_EQ(a.key, sha256_hex(a.inputs.dump()));
  EXPECT_NE(a.key, make_stage_key("head", inputs).key);
  for (const auto& changed : {nlohmann::json{{"quantizer", {{"type", "vq"}, {"codes", 257}, {"beta", 0.25}}}, {"seed", 0}},
                              nlohmann::json{{"quantizer", {{"type", "vq"}, {"codes", 256}, {"beta", 0.2500001}}}, {"seed", 0}},
                              nlohmann::json{{"quantizer", {{"type", "pq"}, {"codes", 256}, {"beta", 0.25}}}, {"seed", 0}},
                              nlohmann::json{{"quantizer", {{"type", "vq"}, {"codes", 256}, {"beta", 0.25}}}, {"seed", 1}}}) {
    EXPECT_NE(a.key, make_stage_key("codebook", changed).key) << changed.dump();
  }
}

TEST(StageKey, LibraryIdentityIsTheContentThisProcessFirstSaw) {
  testing::TempDir dir;
  testing::write_text(dir / "lib.so", "one");
  const auto first = library_identity(dir / "lib.so");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ((*first)["sha256"], sha256_hex("one"));
  EXPECT_EQ((*first)["library"], "lib.so");
  // Rebuilt while this process runs (a sweep's later members): the identity of what it loaded.
  sleep(1);
  testing::write_text(dir / "lib.so", "two");
  EXPECT_EQ((*library_identity(dir / "lib.so"))["sha256"], sha256_hex("one"));
  testing::write_text(dir / "other.so", "two");
  EXPECT_EQ((*library_identity(dir / "other.so"))["sha256"], sha256_hex("two"));
  EXPECT_FALSE(library_identity(dir / "absent.so").ok());
  EXPECT_TRUE(core_identity().ok());
}

class ArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_ / "work");
    fs::create_directories(dir_ / "run");
    testing::write_text(dir_ / "work" / "model.pt", "weights of the model");
    testing::write_text(dir_ / "work" / "extra.bin", std::string(3000, 'x'));
  }
  absl::Status publish(const std::string& key, bool replace = false) {
    return store_.publish("head", key, {{"what", "inputs"}}, {{"loss", 0.5}},
                          {{"model.pt", dir_ / "work" / "model.pt"}, {"extra.bin", dir_ / "work" / "extra.bin"}}, replace);
  }
  testing::TempDir dir_;
  ArtifactStore store_{dir_ / "store"};
};

TEST_F(ArtifactStoreTest, PublishedArtifactIsFoundWholeWithItsRecord) {
  const std::string key(64, 'a');
  EXPECT_FALSE(store_.contains("head", key));
  EXPECT_FALSE(store_.find("head", key).has_value());
  ASSERT_TRUE(publish(key).ok()) << publish(key);
  EXPECT_TRUE(store_.contains("head", key));
  const auto found = store_.find("head", key);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ((*found)["record"]["loss"], 0.5);
  EXPECT_EQ((*found)["inputs"]["what"], "inputs");
  EXPECT_EQ((*found)["files"]["model.pt"]["sha256"], sha256_hex("weights of the model"));
  EXPECT_EQ(testing::read_text(store_.folder("head", key) / "model.pt"), "weights of the model");
  // Nothing half-made is left behind.
  EXPECT_TRUE(fs::is_empty(dir_ / "store" / ".staging"));
  // A second publish of the same key keeps the first (equal inputs, equal artifact).
  testing::write_text(dir_ / "work" / "model.pt", "other weights");
  ASSERT_TRUE(publish(key).ok()) << publish(key);
  EXPECT_EQ(testing::read_text(store_.folder("head", key) / "model.pt"), "weights of the model");
  // A forced one replaces it.
  ASSERT_TRUE(publish(key, /*replace=*/true).ok());
  EXPECT_EQ(testing::read_text(store_.folder("head", key) / "model.pt"), "other weights");
}

TEST_F(ArtifactStoreTest, CorruptOrIncompleteArtifactsAreSetAsideAndNotServed) {
  const std::string flipped(64, 'b'), truncated(64, 'c'), missing(64, 'd'), garbled(64, 'e');
  for (const auto& key : {flipped, truncated, missing, garbled}) ASSERT_TRUE(publish(key).ok()) << publish(key);
  {
    std::fstream f(store_.folder("head", flipped) / "extra.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1500);
    f.put('y');  // same size, other content: only the checksum tells
  }
  fs::resize_file(store_.folder("head", truncated) / "model.pt", 3);
  fs::remove(store_.folder("head", missing) / "extra.bin");
  testing::write_text(store_.folder("head", garbled) / "artifact.json", "{ not json");
  for (const auto& key : {flipped, truncated, missing, garbled}) {
    EXPECT_FALSE(store_.find("head", key).has_value()) << key;
    EXPECT_FALSE(fs::exists(store_.folder("head", key))) << key;
    EXPECT_TRUE(publish(key).ok()) << key;  // computed again, filed again
    EXPECT_TRUE(store_.find("head", key).has_value()) << key;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "store" / ".corrupt"), fs::directory_iterator()), 4);
}

TEST_F(ArtifactStoreTest, PlaceFileLinksAtomicallyOverAnOldFile) {
  testing::write_text(dir_ / "run" / "model.pt", "old");
  ASSERT_TRUE(place_file(dir_ / "work" / "model.pt", dir_ / "run" / "model.pt").ok());
  EXPECT_EQ(testing::read_text(dir_ / "run" / "model.pt"), "weights of the model");
  EXPECT_EQ(fs::hard_link_count(dir_ / "work" / "model.pt"), 2u);  // same file system: a link, no copy
  EXPECT_FALSE(place_file(dir_ / "work" / "absent.pt", dir_ / "run" / "x.pt").ok());
}

TEST_F(ArtifactStoreTest, TheLockMakesASecondProcessWaitForTheFirst) {
  const std::string key(64, 'f');
  const fs::path marker = dir_ / "child-got-lock";
  // The child is forked before the parent locks: a forked copy of the parent's lock descriptor
  // would hold the flock itself. It waits for the go-ahead byte, then asks for the lock.
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t child = fork();
  if (child == 0) {
    close(go[1]);
    char byte = 0;
    if (read(go[0], &byte, 1) != 1) _exit(2);
    ArtifactStore store(dir_ / "store");
    auto held = store.lock("head", key);  // blocks until the parent lets go
    std::ofstream(marker) << (store.contains("head", key) ? "filed" : "absent");
    _exit(held.ok() ? 0 : 1);
  }
  close(go[0]);
  {
    auto lock = store_.lock("head", key);
    ASSERT_TRUE(lock.ok());
    ASSERT_EQ(write(go[1], "x", 1), 1);
    usleep(300 * 1000);
    EXPECT_FALSE(fs::exists(marker)) << "the child must wait while the parent holds the lock";
    ASSERT_TRUE(publish(key).ok()) << publish(key);
  }
  close(go[1]);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(testing::read_text(marker), "filed");  // after the wait it finds the artifact
}

}  // namespace
}  // namespace protoquant
