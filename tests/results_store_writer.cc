// A writer process for the results store's concurrency test: records COUNT runs, ids
// "writer<W>-run<i>", into DB, opening the store itself so several writers race on creating it.
// With GO_FILE it first waits for that file to appear, so every writer starts at the same moment
// rather than one process start-up (LibTorch's libraries loading) after another.
//   results_store_writer DB W COUNT [GO_FILE]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "protoquant/results_store.h"
#include "results_fixtures.h"

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    fmt::print(stderr, "usage: results_store_writer DB WRITER COUNT [GO_FILE]\n");
    return 2;
  }
  if (argc == 5) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!std::filesystem::exists(argv[4])) {
      if (std::chrono::steady_clock::now() > deadline) {
        fmt::print(stderr, "writer {}: {} never appeared\n", argv[2], argv[4]);
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  const std::string writer = argv[2];
  const int count = std::stoi(argv[3]);
  auto store = protoquant::ResultsStore::open(argv[1]);
  if (!store.ok()) {
    fmt::print(stderr, "writer {}: {}\n", writer, std::string(store.status().message()));
    return 1;
  }
  for (int i = 0; i < count; ++i) {
    const auto manifest = protoquant::testing::fixture_manifest({{"experiment", {{"seed", i}}}});
    const auto results = protoquant::testing::fixture_results(fmt::format("writer{}-run{}", writer, i), manifest,
                                                              protoquant::testing::fixture_metrics(0.5 + 0.01 * i));
    if (const auto status = store->add_run(results); !status.ok()) {
      fmt::print(stderr, "writer {}: {}\n", writer, std::string(status.message()));
      return 1;
    }
    // Runs finish apart: without a pause one writer re-takes the lock before the others' busy
    // handlers wake, and the writes would merely queue instead of interleaving.
    std::this_thread::sleep_for(std::chrono::milliseconds(3 + (i * 7 + std::stoi(writer) * 3) % 5));
  }
  return 0;
}
