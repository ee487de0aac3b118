#include "runtime/graph.hpp"
