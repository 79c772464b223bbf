"""Byte-level emulators of the power meters: rehearse a run before the hardware arrives.

Each speaks the real protocol of the meter family, so the drivers that read them are the
real drivers: RDTech UM on a pseudo-terminal (:mod:`.um`), FNIRSI behind fake USB
endpoints (:mod:`.fnirsi`), hwmon and RAPL as fake sysfs trees (:mod:`.sysfs`), the Pi 5
PMIC through a fake ``vcgencmd`` on PATH (:mod:`.vcgencmd`). Power comes from a scripted
trace (:mod:`.traces`) or follows the CPU use of real processes (:mod:`.follow`), whose
true power is written as a trace on the machine's monotonic clock.
``tslm-fleet meter emulate`` serves one of them (:mod:`.serve`).
"""
