// The schemas the core itself owns: the [experiment] table and the training stages.
#pragma once

#include <string>
#include <vector>

#include "protoquant/params.h"

namespace protoquant {

const ParamSchema& experiment_schema();
// The [report] table: report.html and the pictures a run writes by itself.
const ParamSchema& report_schema();
// The stages a manifest may configure, in run order.
const std::vector<std::string>& stage_names();
// The trainer settings every stage shares, with the stage's own defaults and extra keys.
const ParamSchema& stage_schema(const std::string& stage);

}  // namespace protoquant
