# Every lab module: lab.machine, services.labd, services.lab-broker.
{
  imports = [ ./machine.nix ./labd.nix ./broker.nix ];
}
