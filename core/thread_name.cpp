#include "core/thread_name.hpp"

#include <pthread.h>

namespace troupe {

void name_this_thread(const std::string& name) {
  // Best effort: a name is a label for people, and failing to set one changes nothing else.
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace troupe
