// Expands a manifest's [sweep] into members and validates every one of them.
//
// Each member is a fresh parse of the manifest (its files are read from disk once and kept by
// the ManifestReader) into which the member's values are moved from that parse's own [sweep]
// lists. Moving, rather than copying one shared document, is what keeps every node's source
// position (toml++ drops positions on copy), so an invalid swept value is reported at its place
// inside the sweep list.
#include "protoquant/sweep.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include "manifest_document.h"
#include "sweep_labels.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

using manifest_detail::where;
using sweep_detail::json_of;
using sweep_detail::Label;
using sweep_detail::make_names_unique;
using sweep_detail::member_name;
using sweep_detail::member_prefix;
using sweep_detail::value_text;

const std::vector<std::string> kSweepSections = {"grid", "zip", "seeds"};
// A typo in a grid (one list too many) should fail fast, not validate millions of members.
constexpr size_t kMaxSweepMembers = 100000;

// One key a sweep varies.
struct SweptKey {
  std::string name;                   // dotted, as written: "quantizer.codes"; "experiment.seed" for seeds
  std::vector<std::string> path;      // {"quantizer", "codes"}
  std::vector<std::string> location;  // its list inside [sweep]: {"grid", "quantizer.codes"} or {"seeds"}
  toml::source_region source;         // of the key inside [sweep]
};

// One axis of the product: a grid key, the zip's keys together, or the seeds.
struct Dimension {
  std::vector<SweptKey> keys;
  size_t size = 0;
};

// One member's manifest before its assignment: the merged document with [sweep] taken out.
struct SweepDocument {
  toml::table root;
  std::optional<toml::table> sweep;
};

absl::StatusOr<SweepDocument> read_sweep_document(manifest_detail::ManifestReader& reader, const fs::path& manifest,
                                                  const std::vector<std::string>& overrides) {
  PQ_ASSIGN_OR_RETURN(toml::table root, reader.read(manifest));
  // Before the sweep is taken out, so that --set can edit the sweep itself (sweep.seeds=[0]).
  PQ_RETURN_IF_ERROR(manifest_detail::apply_overrides(root, overrides));
  SweepDocument document;
  if (toml::node* node = root.get("sweep")) {
    toml::table* table = node->as_table();
    if (table == nullptr) {
      return absl::InvalidArgumentError(fmt::format("{}: sweep must be a table: [sweep]", where(manifest, node->source())));
    }
    document.sweep = std::move(*table);
    root.erase("sweep");
  }
  document.root = std::move(root);
  return document;
}

// "a.b.c" -> {"a", "b", "c"}; empty when a part is empty ("a..b", ".a").
std::vector<std::string> split_dotted(const std::string& name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (parts.back().empty()) return {};
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

bool is_prefix(const std::vector<std::string>& prefix, const std::vector<std::string>& path) {
  return prefix.size() <= path.size() && std::equal(prefix.begin(), prefix.end(), path.begin());
}

// A value given with --set: the dotted path of one non-table node of its parsed assignment.
struct SetLeaf {
  std::vector<std::string> path;
  std::string assignment;  // as typed, for messages
};

void collect_set_leaves(const toml::table& table, std::vector<std::string>& prefix, const std::string& assignment,
                        std::vector<SetLeaf>& leaves) {
  for (const auto& [key, node] : table) {
    prefix.emplace_back(key.str());
    if (const toml::table* sub = node.as_table()) collect_set_leaves(*sub, prefix, assignment, leaves);
    else leaves.push_back({prefix, assignment});
    prefix.pop_back();
  }
}

// Orders swept keys as they were written: by the file that set them (the farthest base first,
// then the manifest, then each --set in command-line order), then by line and column. TOML
// tables iterate alphabetically, which would make the expansion order surprising.
class WrittenOrder {
 public:
  WrittenOrder(std::vector<std::string> chain, const std::vector<std::string>& overrides) : sources_(std::move(chain)) {
    for (const auto& assignment : overrides) sources_.push_back("--set " + assignment);
  }
  bool before(const SweptKey& a, const SweptKey& b) const { return rank(a.source) < rank(b.source); }

 private:
  std::tuple<size_t, uint32_t, uint32_t> rank(const toml::source_region& region) const {
    size_t source = sources_.size();
    if (region.path) source = std::find(sources_.begin(), sources_.end(), *region.path) - sources_.begin();
    return {source, region.begin.line, region.begin.column};
  }
  std::vector<std::string> sources_;
};

// The list of a swept key inside [sweep] (const or not, as the table is).
template <class Table>
auto sweep_list(Table& sweep, const std::vector<std::string>& location)
    -> decltype(sweep.template get_as<toml::array>(location.back())) {
  auto* table = &sweep;
  for (size_t i = 0; i + 1 < location.size() && table != nullptr; ++i) {
    table = table->template get_as<toml::table>(location[i]);
  }
  return table ? table->template get_as<toml::array>(location.back()) : nullptr;
}

// Turns the [sweep] table into dimensions, collecting every structural error. The per-member
// checks (types, ranges, unknown keys) are left to the validation of each member.
class SweepPlanner {
 public:
  SweepPlanner(const fs::path& manifest, const WrittenOrder& order) : manifest_(manifest), order_(order) {}

  std::vector<Dimension> plan(const toml::table& sweep, const toml::table& root, const std::vector<SetLeaf>& set_leaves) {
    std::optional<Dimension> seeds;
    for (const auto& [key, node] : sweep) {
      const std::string name(key.str());
      if (name == "seeds") {
        if (const toml::array* list = checked_list(node, "sweep.seeds")) {
          seeds = Dimension{{SweptKey{"experiment.seed", {"experiment", "seed"}, {"seeds"}, key.source()}}, list->size()};
        }
      } else if (std::find(kSweepSections.begin(), kSweepSections.end(), name) == kSweepSections.end()) {
        const std::string hint = closest_match(name, kSweepSections);
        error(key.source(), fmt::format("unknown key '{}' in [sweep]{}; [sweep] takes grid, zip and seeds", name,
                                        hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
      }
    }

    // grid x zip x seeds: the grid keys outermost, in written order, the seeds innermost.
    std::vector<Dimension> dimensions;
    for (SweptKey& key : section_keys(sweep, "grid")) {
      const size_t size = sweep_list(sweep, key.location)->size();
      dimensions.push_back({{std::move(key)}, size});
    }
    if (std::optional<Dimension> zip = zip_dimension(sweep)) dimensions.push_back(std::move(*zip));
    if (seeds) dimensions.push_back(std::move(*seeds));

    check_overlaps(dimensions);
    check_parents_are_tables(dimensions, root);
    apply_set_precedence(dimensions, set_leaves);
    return dimensions;
  }

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  void error(const toml::source_region& region, const std::string& message) {
    errors_.push_back(fmt::format("{}: {}", where(manifest_, region), message));
  }

  const toml::array* checked_list(const toml::node& node, const std::string& qualified) {
    const toml::array* list = node.as_array();
    if (list == nullptr || list->empty()) {
      error(node.source(), fmt::format("{} must be a non-empty list of values, e.g. [1, 2]", qualified));
      return nullptr;
    }
    return list;
  }

  // The keys of [sweep.grid] or [sweep.zip] whose lists are well formed, in written order.
  std::vector<SweptKey> section_keys(const toml::table& sweep, const std::string& section) {
    const toml::node* node = sweep.get(section);
    if (node == nullptr) return {};
    const toml::table* table = node->as_table();
    if (table == nullptr) {
      error(node->source(), fmt::format("sweep.{} must be a table of \"dotted.key\" = [values]", section));
      return {};
    }
    std::vector<SweptKey> keys;
    for (const auto& [key, value] : *table) {
      const std::string name(key.str());
      std::vector<std::string> path = split_dotted(name);
      if (path.empty()) {
        error(key.source(), fmt::format("sweep.{}: '{}' is not a dotted key such as \"head.temperature\"", section, name));
        continue;
      }
      if (checked_list(value, fmt::format("sweep.{}.\"{}\"", section, name)) == nullptr) continue;
      keys.push_back({name, std::move(path), {section, name}, key.source()});
    }
    std::stable_sort(keys.begin(), keys.end(), [&](const SweptKey& a, const SweptKey& b) { return order_.before(a, b); });
    return keys;
  }

  std::optional<Dimension> zip_dimension(const toml::table& sweep) {
    std::vector<SweptKey> keys = section_keys(sweep, "zip");
    if (keys.empty()) return std::nullopt;
    const toml::array* first = sweep_list(sweep, keys.front().location);
    bool equal = true;
    for (const SweptKey& key : keys) {
      const toml::array* list = sweep_list(sweep, key.location);
      if (list->size() == first->size()) continue;
      error(list->source(), fmt::format("sweep.zip.\"{}\" has {} values but \"{}\" has {}: zip lists must have the same length",
                                        key.name, list->size(), keys.front().name, first->size()));
      equal = false;
    }
    if (!equal) return std::nullopt;
    return Dimension{std::move(keys), first->size()};
  }

  // Two swept keys that are the same, or one inside the other, would each overwrite the other.
  void check_overlaps(const std::vector<Dimension>& dimensions) {
    std::vector<const SweptKey*> keys;
    for (const Dimension& dimension : dimensions) {
      for (const SweptKey& key : dimension.keys) keys.push_back(&key);
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      for (size_t j = i + 1; j < keys.size(); ++j) {
        const SweptKey& a = *keys[i];
        const SweptKey& b = *keys[j];
        if (a.path == b.path) {
          error(b.source, fmt::format("'{}' is swept twice (also at {})", b.name, where(manifest_, a.source)));
        } else if (is_prefix(a.path, b.path) || is_prefix(b.path, a.path)) {
          error(b.source, fmt::format("swept keys '{}' and '{}' overlap: one is inside the other", a.name, b.name));
        }
      }
    }
  }

  // A member's value goes into nested tables, created where missing; a non-table on the way
  // (quantizer = 3 under "quantizer.codes") cannot hold it.
  void check_parents_are_tables(const std::vector<Dimension>& dimensions, const toml::table& root) {
    for (const Dimension& dimension : dimensions) {
      for (const SweptKey& key : dimension.keys) {
        const toml::table* table = &root;
        for (size_t i = 0; i + 1 < key.path.size() && table != nullptr; ++i) {
          const toml::node* node = table->get(key.path[i]);
          if (node != nullptr && !node->is_table()) {
            error(key.source, fmt::format("swept key '{}': '{}' is not a table in the manifest ({})", key.name,
                                          fmt::join(key.path.begin(), key.path.begin() + i + 1, "."),
                                          where(manifest_, node->source())));
          }
          table = node ? node->as_table() : nullptr;
        }
      }
    }
  }

  // --set wins over the sweep: a swept key set on the command line is no longer swept (every
  // member takes the --set value, and the key leaves the member names). A --set inside a swept
  // key, or around one, would apply to some of the key's value only: an error.
  void apply_set_precedence(std::vector<Dimension>& dimensions, const std::vector<SetLeaf>& set_leaves) {
    for (Dimension& dimension : dimensions) {
      auto fixed_by_set = [&](const SweptKey& key) {
        bool fixed = false;
        for (const SetLeaf& leaf : set_leaves) {
          if (leaf.path == key.path) {
            fixed = true;
          } else if (is_prefix(leaf.path, key.path) || is_prefix(key.path, leaf.path)) {
            error(key.source, fmt::format("--set {} overlaps the swept key '{}': set the whole key, or change the sweep "
                                          "with --set 'sweep.<grid|zip>.\"{}\"=[...]'",
                                          leaf.assignment, key.name, key.name));
          }
        }
        return fixed;
      };
      dimension.keys.erase(std::remove_if(dimension.keys.begin(), dimension.keys.end(), fixed_by_set),
                           dimension.keys.end());
    }
    dimensions.erase(std::remove_if(dimensions.begin(), dimensions.end(),
                                    [](const Dimension& dimension) { return dimension.keys.empty(); }),
                     dimensions.end());
  }

  const fs::path& manifest_;
  const WrittenOrder& order_;
  std::vector<std::string> errors_;
};

// Moves one member's value into its place, creating missing tables. The key carries the swept
// key's position in [sweep], so an unknown name is reported there.
void assign(toml::table& root, const SweptKey& key, toml::node&& value) {
  toml::table* table = &root;
  for (size_t i = 0; i + 1 < key.path.size(); ++i) {
    toml::node* next = table->get(key.path[i]);
    // A table the swept key creates carries the key's position too (an unknown table is
    // reported at the swept key, as an unknown key is).
    if (next == nullptr) next = &(*table->insert(toml::key(key.path[i], key.source), toml::table{}).first).second;
    table = next->as_table();  // SweepPlanner checked that it is one
  }
  table->erase(key.path.back());
  table->insert(toml::key(key.path.back(), key.source), std::move(value));
}

// Member i's position along each dimension: mixed radix, the last dimension varying fastest.
std::vector<size_t> member_digits(size_t index, const std::vector<Dimension>& dimensions) {
  std::vector<size_t> digits(dimensions.size());
  for (size_t d = dimensions.size(); d-- > 0;) {
    digits[d] = index % dimensions[d].size;
    index /= dimensions[d].size;
  }
  return digits;
}

// The problems of every invalid member. A problem every member has comes from the manifest
// itself (a typo outside the sweep): it is listed once, without a member prefix.
std::string sweep_errors(const std::vector<std::vector<std::string>>& errors, const std::vector<std::string>& prefixes) {
  std::map<std::string, size_t> members_with;
  for (const auto& member : errors) {
    for (const auto& line : std::set<std::string>(member.begin(), member.end())) ++members_with[line];
  }
  auto shared = [&](const std::string& line) { return errors.size() > 1 && members_with[line] == errors.size(); };
  std::vector<std::string> lines;
  for (const auto& line : errors.front()) {
    if (shared(line)) lines.push_back(line);
  }
  for (size_t i = 0; i < errors.size(); ++i) {
    for (const auto& line : errors[i]) {
      if (!shared(line)) lines.push_back(fmt::format("{}: {}", prefixes[i], line));
    }
  }
  return fmt::format("{}", fmt::join(lines, "\n"));
}

// A manifest without [sweep]: its one run.
absl::StatusOr<std::vector<SweepMember>> single_member(const fs::path& manifest, const toml::table& root,
                                                       Registry& registry) {
  manifest_detail::ManifestValidation validation = manifest_detail::validate_manifest(manifest, root, registry);
  if (!validation.errors.empty()) {
    return absl::InvalidArgumentError(fmt::format("{}", fmt::join(validation.errors, "\n")));
  }
  std::vector<SweepMember> members(1);
  members[0].name = validation.spec.experiment.get_string("name");
  members[0].assignment = nlohmann::json::object();
  members[0].spec = std::move(validation.spec);
  return members;
}

}  // namespace

absl::StatusOr<std::vector<SweepMember>> load_sweep(const fs::path& manifest, const std::vector<std::string>& overrides,
                                                   Registry& registry) {
  manifest_detail::ManifestReader reader;
  PQ_ASSIGN_OR_RETURN(SweepDocument first, read_sweep_document(reader, manifest, overrides));
  if (!first.sweep) return single_member(manifest, first.root, registry);

  std::vector<SetLeaf> set_leaves;
  for (const auto& assignment : overrides) {
    PQ_ASSIGN_OR_RETURN(const toml::table parsed, manifest_detail::parse_override(assignment));
    std::vector<std::string> prefix;
    collect_set_leaves(parsed, prefix, assignment, set_leaves);
  }
  // --set edits of the sweep itself (sweep.seeds=[0]) are not values of the members.
  set_leaves.erase(std::remove_if(set_leaves.begin(), set_leaves.end(),
                                  [](const SetLeaf& leaf) { return leaf.path.front() == "sweep"; }),
                   set_leaves.end());

  const WrittenOrder order(reader.chain(), overrides);
  SweepPlanner planner(manifest, order);
  const std::vector<Dimension> dimensions = planner.plan(*first.sweep, first.root, set_leaves);
  if (!planner.errors().empty()) {
    return absl::InvalidArgumentError(fmt::format("{}", fmt::join(planner.errors(), "\n")));
  }
  size_t count = 1;
  for (const Dimension& dimension : dimensions) {
    if (count > kMaxSweepMembers / dimension.size) {
      return absl::InvalidArgumentError(fmt::format("{}: [sweep] expands into more than {} members",
                                                    manifest.string(), kMaxSweepMembers));
    }
    count *= dimension.size;
  }

  std::vector<SweepMember> members;
  std::vector<std::vector<std::string>> errors(count);
  std::vector<std::string> prefixes(count);
  bool any_invalid = false;
  for (size_t index = 0; index < count; ++index) {
    SweepDocument document;
    if (index == 0) {
      document = std::move(first);
    } else {
      PQ_ASSIGN_OR_RETURN(document, read_sweep_document(reader, manifest, overrides));
    }
    const std::vector<size_t> digits = member_digits(index, dimensions);
    nlohmann::json assignment = nlohmann::json::object();
    std::vector<Label> labels;
    for (size_t d = 0; d < dimensions.size(); ++d) {
      for (const SweptKey& key : dimensions[d].keys) {
        toml::node& value = *sweep_list(*document.sweep, key.location)->get(digits[d]);
        assignment[key.name] = json_of(value);
        labels.push_back({key.name == "experiment.seed" ? "seed" : key.name, value_text(value)});
        assign(document.root, key, std::move(value));
      }
    }
    manifest_detail::ManifestValidation validation = manifest_detail::validate_manifest(manifest, document.root, registry);
    prefixes[index] = member_prefix(index, labels);
    if (!validation.errors.empty()) {
      errors[index] = std::move(validation.errors);
      any_invalid = true;
      continue;
    }
    SweepMember member;
    member.index = static_cast<int>(index);
    member.name = member_name(validation.spec.experiment.get_string("name"), labels);
    member.assignment = std::move(assignment);
    member.spec = std::move(validation.spec);
    // Each member is a plain single run: its resolved manifest, run alone, reproduces it.
    member.spec.experiment.set("name", member.name);
    member.spec.resolved["experiment"]["name"] = member.name;
    members.push_back(std::move(member));
  }
  if (any_invalid) return absl::InvalidArgumentError(sweep_errors(errors, prefixes));
  make_names_unique(members);
  return members;
}

}  // namespace protoquant
