// Package load owns the many-client load on a gateway: a fleet of IKEv2
// clients in this process that connect, echo through their tunnels, rekey
// and leave (StartClients, `mifsec bench clients`), the soak that runs
// such a fleet for a long time against `mifsec gateway` with flapping
// links and churn and checks that nothing leaks (RunSoak, `mifsec bench
// soak`), and the IKE_SA_INIT flood (FloodIKESAInit). It uses bench/labnet
// for the soak's namespaces and bench/report for its plot, nothing of the
// peers or the runners.
package load
