#pragma once
/// Names the calling thread as `top -H`, `perf` and /proc/<pid>/task/<tid>/comm show it (Linux
/// keeps 15 bytes: a longer name is cut). Operators and the benches' thread profiles
/// (bench/serving/gpu_run.py) tell the serving threads apart by these names.

#include <string>

namespace troupe {

void name_this_thread(const std::string& name);

}  // namespace troupe
