// How a sweep member is named and labelled: its swept values as people write them, in a name
// that is one portable folder name, and in the prefix of its errors (sweep.cc).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "protoquant/sweep.h"

namespace protoquant::sweep_detail {

// One swept key of a member, for its name and its error prefix.
struct Label {
  std::string key;    // "quantizer.codes"; "seed" for experiment.seed
  std::string value;  // value_text()
};

// A TOML value as JSON (the member's assignment).
nlohmann::json json_of(const toml::node& node);
// A value as people write it: strings unquoted, numbers in their shortest form, lists joined by
// commas.
std::string value_text(const toml::node& node);
// "<experiment>-<key>=<value>-...", each value made portable and cut to a bounded length.
std::string member_name(const std::string& experiment_name, const std::vector<Label>& labels);
// "member <i> (<key>=<value>, ...)": what a member's errors start with.
std::string member_prefix(size_t index, const std::vector<Label>& labels);
// Names are unique by construction unless two values render alike (a/b and a_b, or values
// longer than the length kept); those members get their index appended.
void make_names_unique(std::vector<SweepMember>& members);

}  // namespace protoquant::sweep_detail
